import { isIP } from 'node:net';
import type { RegistryConfig } from '../config.js';
import { invalidArgument } from '../errors.js';

/** Where a registry named in references is reached. */
export interface RegistryEndpoint {
  /** The name in references and in `auths` (`docker.io`, `127.0.0.1:5000`). */
  name: string;
  /** `https://registry-1.docker.io`, `http://127.0.0.1:5000`; an insecure registry's scheme is settled by the first ping. */
  base: URL;
  /** Plain HTTP allowed and TLS certificates not verified. */
  insecure: boolean;
  /** A Docker Hub mirror: a failure there falls back to the next endpoint instead of failing the pull. */
  mirror: boolean;
}

const DOCKER_HUB_HOST = 'registry-1.docker.io';

function ipv4ToInt(ip: string): number {
  return ip.split('.').reduce((n, part) => (n << 8) + Number(part), 0) >>> 0;
}

/** `10.0.0.0/8` contains `10.1.2.3` (IPv4 only, the form daemon.json uses for insecure ranges). */
function inCidr(ip: string, cidr: string): boolean {
  const [net, bitsText] = cidr.split('/');
  const bits = Number(bitsText);
  if (isIP(ip) !== 4 || isIP(net ?? '') !== 4 || !Number.isInteger(bits) || bits < 0 || bits > 32) return false;
  const mask = bits === 0 ? 0 : (~0 << (32 - bits)) >>> 0;
  return (ipv4ToInt(ip) & mask) === (ipv4ToInt(net!) & mask);
}

/** Docker's rule: listed hosts and CIDRs, plus loopback (127.0.0.0/8, localhost, ::1), may use plain HTTP. */
export function isInsecure(name: string, cfg: RegistryConfig): boolean {
  const host = name.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');
  if (host === 'localhost' || host === '::1' || inCidr(host, '127.0.0.0/8')) return true;
  return cfg.insecureRegistries.some((entry) => {
    const e = entry.replace(/^[a-z]+:\/\//, '').replace(/\/+$/, '');
    return e === name || e === host || (e.includes('/') && inCidr(host, e));
  });
}

/** The endpoints to try for a registry, in order: Docker Hub's mirrors first, then the registry itself. */
export function registryEndpoints(domain: string, cfg: RegistryConfig): RegistryEndpoint[] {
  const out: RegistryEndpoint[] = [];
  if (domain === 'docker.io') {
    for (const m of cfg.registryMirrors) {
      let url: URL;
      try {
        url = new URL(m);
      } catch {
        throw invalidArgument(`invalid registry mirror ${JSON.stringify(m)}: want a URL like https://mirror.example`);
      }
      const insecure = url.protocol === 'http:' || isInsecure(url.host, cfg);
      out.push({ name: url.host, base: new URL(`${url.protocol}//${url.host}`), insecure, mirror: true });
    }
    out.push({ name: 'docker.io', base: new URL(`https://${DOCKER_HUB_HOST}`), insecure: false, mirror: false });
    return out;
  }
  const insecure = isInsecure(domain, cfg);
  out.push({ name: domain, base: new URL(`https://${domain}`), insecure, mirror: false });
  return out;
}
