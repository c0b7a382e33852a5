import { describe, expect, it } from "vitest";
import { clientIp, compileNetworks, inNetworks, ipGroup, normaliseIp, wideNetwork } from "./client-ip.js";

describe("normaliseIp: one spelling per caller", () => {
  it("reads every spelling of an IPv4-mapped IPv6 address as the IPv4 address", () => {
    for (const spelling of ["1.2.3.4", "::ffff:1.2.3.4", "::FFFF:1.2.3.4", "0:0:0:0:0:ffff:1.2.3.4", "0000:0000:0000:0000:0000:ffff:1.2.3.4", "::ffff:102:304", "[::ffff:1.2.3.4]", " 0:0::ffff:0102:0304 "]) {
      expect(normaliseIp(spelling), spelling).toBe("1.2.3.4");
    }
  });

  it("writes IPv6 in its RFC 5952 form", () => {
    expect(normaliseIp("2001:0DB8:0000:0000:0000:0000:0000:0001")).toBe("2001:db8::1");
    expect(normaliseIp("2001:db8:0:0:1:0:0:1")).toBe("2001:db8::1:0:0:1");
    expect(normaliseIp("fe80::1%eth0")).toBe("fe80::1");
    expect(normaliseIp("::1")).toBe("::1");
    expect(normaliseIp("::")).toBe("::");
    expect(normaliseIp("2001:db8:1:2:3:4:5:6")).toBe("2001:db8:1:2:3:4:5:6");
    // Not IPv4-mapped: ::ffff:0:1.2.3.4 (SIIT) and ::1.2.3.4 stay IPv6.
    expect(normaliseIp("::ffff:0:1.2.3.4")).toBe("::ffff:0:102:304");
  });

  it("leaves what is not an address alone", () => {
    expect(normaliseIp("unknown")).toBe("unknown");
    expect(normaliseIp("")).toBe("");
  });
});

describe("clientIp", () => {
  it("is the same caller from the socket or a trusted X-Forwarded-For, whatever the spelling", () => {
    expect(clientIp("0:0:0:0:0:ffff:1.2.3.4", undefined, 0)).toBe("1.2.3.4");
    expect(clientIp("::ffff:127.0.0.1", "0:0:0:0:0:ffff:1.2.3.4", 1)).toBe("1.2.3.4");
    expect(clientIp("::ffff:127.0.0.1", "9.9.9.9, ::ffff:1.2.3.4", 1)).toBe("1.2.3.4");
    expect(ipGroup(clientIp("::1", "::ffff:102:304", 1))).toBe(ipGroup("1.2.3.4"));
  });

  it("blocklists a mapped spelling of a blocked IPv4 network", () => {
    const list = compileNetworks(["203.0.113.0/24"]);
    expect(inNetworks(list, clientIp("::1", "0:0:0:0:0:ffff:203.0.113.9", 1))).toBe(true);
  });

  it("answers each address the same every time it is asked (verdicts are remembered), and an empty list holds nothing", () => {
    const list = compileNetworks(["203.0.113.0/24", "2001:db8::/32", "198.51.100.7"]);
    const asked = ["203.0.113.9", "203.0.114.9", "2001:db8::1", "2001:db9::1", "198.51.100.7", "198.51.100.8", "not an ip"];
    const want = [true, false, true, false, true, false, false];
    for (let round = 0; round < 3; round++) expect(asked.map((ip) => inNetworks(list, ip))).toEqual(want);
    expect(asked.map((ip) => inNetworks(compileNetworks([]), ip))).toEqual(asked.map(() => false));
  });

  it("the socket's address is normalised per address, whichever came before", () => {
    expect(clientIp("::ffff:10.0.0.1", undefined, 0)).toBe("10.0.0.1");
    expect(clientIp("::ffff:10.0.0.1", undefined, 0)).toBe("10.0.0.1");
    expect(clientIp("2001:DB8:0:0:0:0:0:1", undefined, 0)).toBe("2001:db8::1");
    expect(clientIp(undefined, undefined, 0)).toBe("");
    expect(clientIp("::ffff:10.0.0.1", undefined, 0)).toBe("10.0.0.1");
  });
});

describe("wideNetwork", () => {
  it("is an IPv4 /16 or an IPv6 /32, whatever the address inside it", () => {
    expect(wideNetwork("198.51.100.7")).toBe("198.51.0.0/16");
    expect(wideNetwork("198.51.7.200")).toBe("198.51.0.0/16");
    expect(wideNetwork("198.52.100.7")).toBe("198.52.0.0/16");
    expect(wideNetwork("2001:db8:aa:1::1")).toBe("2001:db8::/32");
    expect(wideNetwork("2001:db8:ffff:ffff::1")).toBe("2001:db8::/32");
    expect(wideNetwork("2001:db9::1")).toBe("2001:db9::/32");
  });
});
