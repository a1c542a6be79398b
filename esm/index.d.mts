export { Tun, TunError, PacketSplitter, FrameSplitter } from '../dist/index.js'
export type { TunOptions, ReadOptions, TunStats, TunOffload, TunProbe } from '../dist/index.js'
import * as cjs from '../dist/index.js'
export default cjs
