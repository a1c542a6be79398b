// ES module entry: the same classes as the CommonJS build (one copy, one native binding).
import cjs from '../dist/index.js'

export const { Tun, TunError, PacketSplitter, FrameSplitter } = cjs
export default cjs
