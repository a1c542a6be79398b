// Packet helpers for the tests: a plain reference implementation, written
// independently of the library's own parsing and checksum code.

/** RFC 1071 internet checksum of `data` plus an initial 32-bit sum. */
export function checksum(data: Uint8Array, initial = 0): number {
  let sum = initial
  for (let i = 0; i + 1 < data.length; i += 2) sum += (data[i]! << 8) | data[i + 1]!
  if (data.length % 2 === 1) sum += data[data.length - 1]! << 8
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  return ~sum & 0xffff
}

function sum16(data: Uint8Array): number {
  let sum = 0
  for (let i = 0; i + 1 < data.length; i += 2) sum += (data[i]! << 8) | data[i + 1]!
  if (data.length % 2 === 1) sum += data[data.length - 1]! << 8
  return sum
}

function pseudo4(src: Uint8Array, dst: Uint8Array, proto: number, len: number): number {
  return sum16(src) + sum16(dst) + proto + len
}

function pseudo6(src: Uint8Array, dst: Uint8Array, proto: number, len: number): number {
  return sum16(src) + sum16(dst) + (len >>> 16) + (len & 0xffff) + proto
}

export interface Parsed {
  version: 4 | 6
  proto: number
  src: string
  dst: string
  /** Offset of the L4 header. */
  l4: number
  /** True when the IP header checksum (v4) and the L4 checksum verify. */
  checksumsValid: boolean
  srcPort?: number
  dstPort?: number
  payload: Buffer
}

function fmt4(b: Uint8Array): string {
  return Array.from(b).join('.')
}

function fmt6(b: Uint8Array): string {
  const parts: string[] = []
  for (let i = 0; i < 16; i += 2) parts.push(((b[i]! << 8) | b[i + 1]!).toString(16))
  return parts.join(':').replace(/\b(?:0:)+0\b/, ':').replace(/:{3,}/, '::')
}

export function ipToBytes(ip: string): Buffer {
  if (ip.includes('.')) return Buffer.from(ip.split('.').map(Number))
  const [head, tail] = ip.split('::') as [string, string | undefined]
  const h = head ? head.split(':') : []
  const t = tail !== undefined && tail !== '' ? tail.split(':') : []
  const fill = tail === undefined ? [] : new Array(8 - h.length - t.length).fill('0')
  const words = [...h, ...fill, ...t].map((w) => parseInt(w, 16))
  const out = Buffer.alloc(16)
  words.forEach((w, i) => out.writeUInt16BE(w, i * 2))
  return out
}

/** Parses an IPv4/IPv6 packet (no extension headers) and verifies its checksums. */
export function parse(pkt: Uint8Array): Parsed | undefined {
  const b = Buffer.from(pkt.buffer, pkt.byteOffset, pkt.byteLength)
  const v = b[0]! >> 4
  if (v === 4) {
    const ihl = (b[0]! & 15) * 4
    const total = b.readUInt16BE(2)
    const proto = b[9]!
    const src = b.subarray(12, 16)
    const dst = b.subarray(16, 20)
    let ok = checksum(b.subarray(0, ihl)) === 0
    const l4 = b.subarray(ihl, total)
    if (proto === 6 || proto === 17) ok &&= checksum(l4, pseudo4(src, dst, proto, l4.length)) === 0 || (proto === 17 && l4.readUInt16BE(6) === 0)
    if (proto === 1) ok &&= checksum(l4) === 0
    const r: Parsed = { version: 4, proto, src: fmt4(src), dst: fmt4(dst), l4: ihl, checksumsValid: ok, payload: l4.subarray(proto === 17 ? 8 : proto === 6 ? (l4[12]! >> 4) * 4 : 0) }
    if (proto === 6 || proto === 17) {
      r.srcPort = l4.readUInt16BE(0)
      r.dstPort = l4.readUInt16BE(2)
    }
    return r
  }
  if (v === 6) {
    const plen = b.readUInt16BE(4)
    const proto = b[6]!
    const src = b.subarray(8, 24)
    const dst = b.subarray(24, 40)
    const l4 = b.subarray(40, 40 + plen)
    let ok = true
    if (proto === 6 || proto === 17 || proto === 58) ok = checksum(l4, pseudo6(src, dst, proto, l4.length)) === 0
    const r: Parsed = { version: 6, proto, src: fmt6(src), dst: fmt6(dst), l4: 40, checksumsValid: ok, payload: l4.subarray(proto === 17 ? 8 : proto === 6 ? (l4[12]! >> 4) * 4 : 0) }
    if (proto === 6 || proto === 17) {
      r.srcPort = l4.readUInt16BE(0)
      r.dstPort = l4.readUInt16BE(2)
    }
    return r
  }
  return undefined
}

/** Builds an echo reply for an ICMP (v4) or ICMPv6 echo request, or undefined for anything else. */
export function echoReply(pkt: Uint8Array): Buffer | undefined {
  const req = Buffer.from(pkt)
  const v = req[0]! >> 4
  if (v === 4) {
    const ihl = (req[0]! & 15) * 4
    if (req[9] !== 1 || req[ihl] !== 8) return undefined
    const out = Buffer.from(req)
    req.copy(out, 12, 16, 20)
    req.copy(out, 16, 12, 16)
    out[8] = 64
    out.writeUInt16BE(0, 10)
    out.writeUInt16BE(checksum(out.subarray(0, ihl)), 10)
    out[ihl] = 0
    out.writeUInt16BE(0, ihl + 2)
    out.writeUInt16BE(checksum(out.subarray(ihl, out.readUInt16BE(2))), ihl + 2)
    return out
  }
  if (v === 6) {
    if (req[6] !== 58 || req[40] !== 128) return undefined
    const out = Buffer.from(req)
    req.copy(out, 8, 24, 40)
    req.copy(out, 24, 8, 24)
    out[7] = 64
    out[40] = 129
    out.writeUInt16BE(0, 42)
    const l4 = out.subarray(40, 40 + out.readUInt16BE(4))
    out.writeUInt16BE(checksum(l4, pseudo6(out.subarray(8, 24), out.subarray(24, 40), 58, l4.length)), 42)
    return out
  }
  return undefined
}

/** A zeroed IPv4 packet of `total` bytes with its 20-byte header filled in (DF, TTL 64, valid header checksum). */
function ipv4(total: number, proto: number, src: string, dst: string): Buffer {
  const b = Buffer.alloc(total)
  b[0] = 0x45
  b.writeUInt16BE(total, 2)
  b.writeUInt16BE(0x4000, 6)
  b[8] = 64
  b[9] = proto
  ipToBytes(src).copy(b, 12)
  ipToBytes(dst).copy(b, 16)
  b.writeUInt16BE(checksum(b.subarray(0, 20)), 10)
  return b
}

/** Builds an IPv4 TCP packet with valid checksums. `opts` must be a multiple of 4 bytes. */
export function tcp4(src: string, dst: string, sport: number, dport: number, seq: number, ack: number, flags: number, payload: Uint8Array, opts: Uint8Array = new Uint8Array()): Buffer {
  const thl = 20 + opts.length
  const b = ipv4(20 + thl + payload.length, 6, src, dst)
  b.writeUInt16BE(sport, 20)
  b.writeUInt16BE(dport, 22)
  b.writeUInt32BE(seq >>> 0, 24)
  b.writeUInt32BE(ack >>> 0, 28)
  b[32] = (thl / 4) << 4
  b[33] = flags
  b.writeUInt16BE(65535, 34)
  Buffer.from(opts).copy(b, 40)
  Buffer.from(payload).copy(b, 20 + thl)
  b.writeUInt16BE(checksum(b.subarray(20), pseudo4(b.subarray(12, 16), b.subarray(16, 20), 6, thl + payload.length)), 36)
  return b
}

/** Builds an IPv4 UDP packet with valid checksums. */
export function udp4(src: string, dst: string, sport: number, dport: number, payload: Uint8Array): Buffer {
  const b = ipv4(20 + 8 + payload.length, 17, src, dst)
  b.writeUInt16BE(sport, 20)
  b.writeUInt16BE(dport, 22)
  b.writeUInt16BE(8 + payload.length, 24)
  Buffer.from(payload).copy(b, 28)
  let c = checksum(b.subarray(20), pseudo4(b.subarray(12, 16), b.subarray(16, 20), 17, 8 + payload.length))
  if (c === 0) c = 0xffff
  b.writeUInt16BE(c, 26)
  return b
}

/** Builds an IPv6 UDP packet with a valid checksum. */
export function udp6(src: string, dst: string, sport: number, dport: number, payload: Uint8Array): Buffer {
  const b = Buffer.alloc(40 + 8 + payload.length)
  b[0] = 0x60
  b.writeUInt16BE(8 + payload.length, 4)
  b[6] = 17
  b[7] = 64
  ipToBytes(src).copy(b, 8)
  ipToBytes(dst).copy(b, 24)
  b.writeUInt16BE(sport, 40)
  b.writeUInt16BE(dport, 42)
  b.writeUInt16BE(8 + payload.length, 44)
  Buffer.from(payload).copy(b, 48)
  let c = checksum(b.subarray(40), pseudo6(b.subarray(8, 24), b.subarray(24, 40), 17, 8 + payload.length))
  if (c === 0) c = 0xffff
  b.writeUInt16BE(c, 46)
  return b
}
