// IPv4 CIDR arithmetic for the network checks. IPv6 is out of scope: the
// private-network topologies Tender supports are addressed over IPv4, and an
// IPv6 block never satisfies (or breaks) an IPv4 rule.

export interface Cidr {
  /** Network address as an unsigned 32-bit integer (host bits cleared). */
  base: number;
  bits: number;
}

export function ipToInt(ip: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip.trim());
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

export function intToIp(n: number): string {
  return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

function mask(bits: number): number {
  return bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
}

/** Parses `a.b.c.d/n`; a bare address is a /32. Undefined when it is not IPv4 CIDR. */
export function parseCidr(text: string | undefined): Cidr | undefined {
  if (!text) return undefined;
  const [ip, len, extra] = text.trim().split('/');
  if (extra !== undefined || ip === undefined) return undefined;
  const addr = ipToInt(ip);
  if (addr === undefined) return undefined;
  const bits = len === undefined ? 32 : /^\d{1,2}$/.test(len) ? Number(len) : NaN;
  if (!(bits >= 0 && bits <= 32)) return undefined;
  return { base: (addr & mask(bits)) >>> 0, bits };
}

export function isCidr(text: string | undefined): boolean {
  return parseCidr(text) !== undefined;
}

export function formatCidr(c: Cidr): string {
  return `${intToIp(c.base)}/${c.bits}`;
}

/** True when every address of `inner` lies in `outer`. Unparseable input is never contained. */
export function cidrContains(outer: string, inner: string): boolean {
  const o = parseCidr(outer);
  const i = parseCidr(inner);
  if (!o || !i) return false;
  return o.bits <= i.bits && ((i.base & mask(o.bits)) >>> 0) === o.base;
}

export function cidrsOverlap(a: string, b: string): boolean {
  const x = parseCidr(a);
  const y = parseCidr(b);
  if (!x || !y) return false;
  const bits = Math.min(x.bits, y.bits);
  return ((x.base & mask(bits)) >>> 0) === ((y.base & mask(bits)) >>> 0);
}

export function prefixLength(cidr: string): number {
  return parseCidr(cidr)?.bits ?? -1;
}
