import { corrupt } from '../../errors.js';
import type { TarTime } from './tar-header.js';

/** Codecs for the fields of a 512-byte tar header block and for PAX records, shared by reader and writer. */

export const BLOCK = 512;

/** The zero bytes that fill `size` bytes of data up to a whole block. */
export const padding = (size: number): number => (BLOCK - (size % BLOCK)) % BLOCK;

export function isZeroBlock(b: Buffer): boolean {
  // Fast reject on the first bytes (a name), then a full scan.
  if (b[0] !== 0) return false;
  for (let i = 0; i < BLOCK; i++) if (b[i] !== 0) return false;
  return true;
}

/** A NUL-terminated (or field-filling) string field, decoded as UTF-8. */
export function readString(b: Buffer, off: number, len: number): string {
  let end = off;
  const max = off + len;
  while (end < max && b[end] !== 0) end++;
  return end === off ? '' : b.toString('utf8', off, end);
}

/**
 * A numeric field: octal digits (leading spaces/NULs skipped, ended by space or NUL), or GNU base-256 when the first
 * byte has its top bit set (0x80 positive, 0xff negative two's complement).
 */
export function parseNumeric(b: Buffer, off: number, len: number, field: string, at: number): number {
  const end = off + len;
  if (b[off] & 0x80) {
    const inv = b[off] & 0x40 ? 0xff : 0;
    let x = 0;
    for (let i = off; i < end; i++) {
      let c = b[i] ^ inv;
      if (i === off) c &= 0x7f;
      if (x > 2 ** 44) throw corrupt(`tar header at offset ${at}: ${field} is out of range`);
      x = x * 256 + c;
    }
    return inv ? -x - 1 : x;
  }
  let i = off;
  while (i < end && (b[i] === 0x20 || b[i] === 0)) i++;
  let x = 0;
  for (; i < end; i++) {
    const c = b[i];
    if (c >= 0x30 && c <= 0x37) x = x * 8 + (c - 0x30);
    else break;
  }
  for (; i < end; i++) {
    if (b[i] !== 0x20 && b[i] !== 0) throw corrupt(`tar header at offset ${at}: invalid ${field} field`);
  }
  return x;
}

/** The stored checksum must equal the sum of the block's bytes with the checksum field read as spaces (unsigned or signed, as old tars did). */
export function verifyChecksum(b: Buffer): boolean {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : b[i];
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  let stored: number;
  try {
    stored = parseNumeric(b, 148, 8, 'chksum', 0);
  } catch {
    return false;
  }
  return stored === unsigned || stored === signed;
}

/** Parse "<len> <key>=<value>\n" records; values are kept as raw bytes (copied out of the input). */
export function parsePaxRecords(data: Buffer, into: Map<string, Buffer>, at: number): void {
  const bad = () => corrupt(`malformed PAX header at offset ${at}`);
  let i = 0;
  while (i < data.length) {
    if (data[i] === 0) {
      // Some writers pad the record block with NULs.
      for (; i < data.length; i++) if (data[i] !== 0) throw bad();
      return;
    }
    let sp = i;
    let len = 0;
    while (sp < data.length && data[sp] >= 0x30 && data[sp] <= 0x39 && sp - i < 16) len = len * 10 + (data[sp++] - 0x30);
    if (sp === i || data[sp] !== 0x20) throw bad();
    const end = i + len;
    if (end > data.length || end <= sp + 2 || data[end - 1] !== 0x0a) throw bad();
    const eq = data.indexOf(0x3d, sp + 1);
    if (eq < 0 || eq >= end - 1 || eq === sp + 1) throw bad();
    into.set(data.toString('utf8', sp + 1, eq), Buffer.from(data.subarray(eq + 1, end - 1)));
    i = end;
  }
}

export function parsePaxInt(v: Buffer, key: string, at: number): number {
  const s = v.toString('latin1');
  if (!/^-?[0-9]{1,16}$/.test(s)) throw corrupt(`invalid PAX ${key} ${JSON.stringify(s)} at offset ${at}`);
  const n = Number(s);
  if (!Number.isSafeInteger(n)) throw corrupt(`PAX ${key} at offset ${at} is out of range`);
  return n;
}

/** "sec[.fraction]", possibly negative; nsec is normalised to [0, 1e9) and extra fraction digits are dropped. */
export function parsePaxTime(v: Buffer, key: string, at: number): TarTime {
  const s = v.toString('latin1');
  const m = /^(-?)([0-9]{1,16})(?:\.([0-9]*))?$/.exec(s);
  if (!m) throw corrupt(`invalid PAX ${key} ${JSON.stringify(s)} at offset ${at}`);
  const whole = Number(m[2]);
  const frac = Number((m[3] ?? '').slice(0, 9).padEnd(9, '0'));
  if (m[1] !== '-') return { sec: whole, nsec: frac };
  return frac === 0 ? { sec: -whole, nsec: 0 } : { sec: -whole - 1, nsec: 1e9 - frac };
}

export function formatPaxTime(t: TarTime): string {
  if (t.nsec === 0) return String(t.sec);
  const [sec, nsec] = t.sec < 0 ? [`-${-t.sec - 1}`, 1e9 - t.nsec] : [String(t.sec), t.nsec];
  return `${sec}.${String(nsec).padStart(9, '0').replace(/0+$/, '')}`;
}

/** One PAX record; its decimal length counts its own digits. */
export function formatPaxRecord(key: string, value: Buffer | string): Buffer {
  const k = Buffer.from(key, 'utf8');
  const v = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  const rest = k.length + v.length + 3; // ' ', '=', '\n'
  let len = rest + String(rest).length;
  if (String(len).length > String(rest).length) len = rest + String(len).length;
  const out = Buffer.allocUnsafe(len);
  let off = out.write(`${len} `, 0, 'latin1');
  off += k.copy(out, off);
  out[off++] = 0x3d; // '='
  off += v.copy(out, off);
  out[off] = 0x0a;
  return out;
}

/** Write `value` as zero-padded octal into a field of `len` bytes ending with NUL; false if it does not fit. */
export function writeOctal(b: Buffer, off: number, len: number, value: number): boolean {
  if (!Number.isSafeInteger(value) || value < 0) return false;
  const s = value.toString(8);
  if (s.length > len - 1) return false;
  b.write(s.padStart(len - 1, '0'), off, 'latin1');
  b[off + len - 1] = 0;
  return true;
}

export const fitsOctal = (value: number, len: number): boolean =>
  Number.isSafeInteger(value) && value >= 0 && value < 8 ** (len - 1);

/** Fill the checksum field as GNU tar does: six octal digits, NUL, space. */
export function writeChecksum(b: Buffer): void {
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i];
  b.write(sum.toString(8).padStart(6, '0'), 148, 'latin1');
  b[154] = 0;
  b[155] = 0x20;
}
