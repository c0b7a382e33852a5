import { BlockList, isIP } from "node:net";

/**
 * The caller's address as tollgate believes it: the socket's, unless `trust_proxy` hops are
 * configured, then the Nth address from the right of X-Forwarded-For (each trusted proxy appends
 * the address it saw, so anything further left was written by the client and is not believed).
 */
export function clientIp(socketAddress: string | undefined, forwardedFor: string | undefined, trustProxy: number): string {
  const socket = socketIp(socketAddress);
  if (trustProxy <= 0 || !forwardedFor) return socket;
  const hops = forwardedFor.split(",").map((s) => s.trim()).filter(Boolean);
  const chosen = hops[hops.length - trustProxy] ?? hops[0];
  const ip = chosen ? normaliseIp(chosen) : "";
  return isIP(ip) ? ip : socket;
}

let lastSocketAddress: string | undefined;
let lastSocketIp = "";

/** normaliseIp of a socket's address: one connection sends many requests, so the last answer is kept. */
function socketIp(address: string | undefined): string {
  if (address === lastSocketAddress) return lastSocketIp;
  const ip = normaliseIp(address ?? "");
  lastSocketAddress = address;
  lastSocketIp = ip;
  return ip;
}

/**
 * One spelling per caller, so limits, scores and blocklists cannot be dodged by respelling an
 * address: an IPv4-mapped IPv6 address in any form (::ffff:1.2.3.4, 0:0:0:0:0:ffff:1.2.3.4,
 * ::ffff:102:304) is its IPv4 address, and any other IPv6 address takes its RFC 5952 form.
 * Strips brackets and zones. Anything that is not an address is returned trimmed and lower-cased.
 */
export function normaliseIp(raw: string): string {
  let ip = raw.trim().toLowerCase();
  if (ip.startsWith("[") && ip.includes("]")) ip = ip.slice(1, ip.indexOf("]"));
  const zone = ip.indexOf("%");
  if (zone >= 0) ip = ip.slice(0, zone);
  if (!ip.includes(":") || isIP(ip) !== 6) return ip;
  const groups = expandIpv6(ip);
  if (groups.slice(0, 5).every((g) => g === "0") && groups[5] === "ffff") {
    const hi = parseInt(groups[6]!, 16);
    const lo = parseInt(groups[7]!, 16);
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return compressIpv6(groups);
}

/** RFC 5952: the longest run of two or more zero groups (the first of equals) becomes "::". */
function compressIpv6(groups: string[]): string {
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < groups.length; ) {
    if (groups[i] !== "0") {
      i++;
      continue;
    }
    let j = i;
    while (j < groups.length && groups[j] === "0") j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  if (best < 0) return groups.join(":");
  return `${groups.slice(0, best).join(":")}::${groups.slice(best + bestLen).join(":")}`;
}

/**
 * The unit `per: ip` counts: an IPv4 address, or an IPv6 /64 — one subscriber usually holds a
 * whole /64, so counting single v6 addresses would let a caller rotate through 2^64 quotas.
 */
export function ipGroup(ip: string): string {
  if (isIP(ip) !== 6) return ip;
  return `${expandIpv6(ip).slice(0, 4).join(":")}::/64`;
}

/** The /24 (IPv4) or /48 (IPv6) network, for signup-farm signals. */
export function ipNetwork(ip: string): string {
  if (isIP(ip) === 4) return ip.split(".").slice(0, 3).join(".") + ".0/24";
  if (isIP(ip) === 6) return `${expandIpv6(ip).slice(0, 3).join(":")}::/48`;
  return ip;
}

/**
 * The network key_many_networks counts: an IPv4 /16 or an IPv6 /32. A /32 is what a regional
 * registry allocates to one provider (roughly an ASN), and a /16 is the IPv4 range one ISP's
 * customers move around in, so a subscriber whose address changes stays on one network while a
 * credential shared across residential proxies does not.
 */
export function wideNetwork(ip: string): string {
  if (isIP(ip) === 4) return ip.split(".").slice(0, 2).join(".") + ".0.0/16";
  if (isIP(ip) === 6) return `${expandIpv6(ip).slice(0, 2).join(":")}::/32`;
  return ip;
}

function expandIpv6(ip: string): string[] {
  const [head = "", tail] = ip.split("::");
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  // An embedded IPv4 tail takes two groups.
  const fix = (parts: string[]) => {
    const out: string[] = [];
    for (const p of parts) {
      if (p.includes(".")) {
        const [a, b, c, d] = p.split(".").map(Number) as [number, number, number, number];
        out.push(((a << 8) | b).toString(16), ((c << 8) | d).toString(16));
      } else out.push(p);
    }
    return out;
  };
  const l = fix(left);
  const r = fix(right);
  const fill = tail === undefined ? [] : Array(8 - l.length - r.length).fill("0");
  return [...l, ...fill, ...r].map((g) => parseInt(g || "0", 16).toString(16));
}

/** Verdicts a non-empty network list remembers, per address: a flood comes from few addresses. */
const MAX_REMEMBERED_VERDICTS = 10_000;

/**
 * A CIDR/IP list compiled once at start. node's BlockList builds a SocketAddress for every check
 * (several µs), so an empty list answers without it and a non-empty one remembers its verdicts
 * (the list never changes after start).
 */
export class Networks {
  private readonly verdicts = new Map<string, boolean>();
  constructor(
    private readonly list: BlockList,
    readonly size: number,
  ) {}

  has(ip: string): boolean {
    if (this.size === 0) return false;
    let verdict = this.verdicts.get(ip);
    if (verdict === undefined) {
      const family = isIP(ip);
      verdict = family !== 0 && this.list.check(ip, family === 6 ? "ipv6" : "ipv4");
      if (this.verdicts.size >= MAX_REMEMBERED_VERDICTS) this.verdicts.clear();
      this.verdicts.set(ip, verdict);
    }
    return verdict;
  }
}

export function compileNetworks(entries: string[]): Networks {
  const list = new BlockList();
  for (const entry of entries) {
    const [addr = "", bits] = entry.split("/");
    const family = isIP(addr) === 6 ? "ipv6" : "ipv4";
    if (bits === undefined) list.addAddress(addr, family);
    else list.addSubnet(addr, Number(bits), family);
  }
  return new Networks(list, entries.length);
}

export function inNetworks(list: Networks, ip: string): boolean {
  return list.has(ip);
}
