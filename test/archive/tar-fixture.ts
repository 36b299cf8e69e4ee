import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync, symlinkSync, linkSync, chmodSync, chownSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { TarHeader, TarTime } from '../../src/archive/tar/tar-header.js';

/** Shared by the tar tests: a tree with every kind of entry and metadata a layer can carry, and a Python tarfile oracle. */

/** A header for the tests that build tar entries: a plain 0644 root-owned entry, `h` overriding any field. */
export const hdr = (h: Partial<TarHeader> & Pick<TarHeader, 'name' | 'type'>): TarHeader => ({
  mode: 0o644, uid: 0, gid: 0, uname: '', gname: '', size: 0, mtime: { sec: 1700000000, nsec: 0 }, linkname: '',
  devmajor: 0, devminor: 0, xattrs: new Map(), pax: new Map(), ...h,
});

export const LONG_DIR = 'd'.repeat(60) + '/' + 'e'.repeat(60);
export const LONG_PATH = LONG_DIR + '/' + 'f'.repeat(200 - LONG_DIR.length - 1); // 200 characters
export const LONG_TARGET = 't'.repeat(70) + '/' + 'u'.repeat(79); // 150 characters
export const XATTR_BIN = Buffer.from([0xff, 0xfe, 0x80, 0x00, 0x41]);
export const SUBSEC = { date: '2023-01-02T03:04:05.123456789Z', sec: 1672628645, nsec: 123456789 };

const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });

/** Build the tree under root (needs root: devices, chown, trusted.* xattrs). */
export function makeTree(root: string): void {
  const p = (s: string) => join(root, s);
  writeFileSync(p('hello.txt'), 'hello\n');
  writeFileSync(p('empty'), '');
  writeFileSync(p('big.bin'), randomBytes(3 * 1024 * 1024 + 123));
  mkdirSync(p(LONG_DIR), { recursive: true });
  writeFileSync(p(LONG_PATH), 'long\n');
  symlinkSync(LONG_TARGET, p('longlink'));
  symlinkSync('hello.txt', p('link'));
  linkSync(p('hello.txt'), p('hard'));
  sh('mknod', [p('null'), 'c', '1', '3']);
  sh('mknod', [p('loop0'), 'b', '7', '0']);
  sh('mkfifo', [p('fifo')]);
  writeFileSync(p('setuid'), '#!/bin/sh\n');
  chmodSync(p('setuid'), 0o4755);
  mkdirSync(p('setgid'));
  chmodSync(p('setgid'), 0o2750);
  mkdirSync(p('sticky'));
  chmodSync(p('sticky'), 0o1777);
  writeFileSync(p('owned'), 'x');
  chownSync(p('owned'), 1234567, 1234567);
  writeFileSync(p('bigid'), 'y');
  chownSync(p('bigid'), 4000000, 4000001); // over 0o7777777: base-256 in GNU format
  writeFileSync(p('xattr'), 'z');
  sh('setfattr', ['-n', 'user.bin', '-v', '0x' + XATTR_BIN.toString('hex'), p('xattr')]);
  sh('setfattr', ['-n', 'user.text', '-v', 'plain', p('xattr')]);
  mkdirSync(p('opaque'));
  sh('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', p('opaque')]);
  writeFileSync(p('opaque/.wh..wh..opq'), '');
  writeFileSync(p('.wh.foo'), '');
  writeFileSync(p('subsec'), 's');
  sh('touch', ['-h', '-d', SUBSEC.date, p('subsec')]);
  writeFileSync(p('héllo-ü.txt'), 'utf8 name');
  writeFileSync(p('old'), 'o');
  sh('touch', ['-d', '1960-01-01T00:00:00Z', p('old')]);
}

/** GNU tar archive of the tree; entries sorted by name so runs are comparable. */
export function gnuTar(root: string, out: string, format: 'pax' | 'gnu' | 'ustar'): void {
  const xattrs = format === 'pax' ? ['--xattrs', '--xattrs-include=*'] : [];
  sh('tar', ['--sort=name', `--format=${format}`, ...xattrs, '-cf', out, '-C', root, '.']);
}

const PY_DUMP = `
import json, sys, tarfile
out = []
with tarfile.open(sys.argv[1], encoding='utf-8', errors='surrogateescape') as tf:
    for m in tf:
        out.append(dict(name=m.name.encode('utf-8', 'surrogateescape').decode('utf-8'), type=m.type.decode('latin1'), mode=m.mode, uid=m.uid, gid=m.gid,
            uname=m.uname, gname=m.gname, size=m.size, mtime=repr(m.mtime), linkname=m.linkname,
            devmajor=m.devmajor, devminor=m.devminor,
            pax={k: v.encode('utf-8', 'surrogateescape').hex() for k, v in m.pax_headers.items()}))
json.dump(out, sys.stdout)
`;

export interface PyMember {
  name: string;
  type: string;
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  size: number;
  mtime: string;
  linkname: string;
  devmajor: number;
  devminor: number;
  pax: Record<string, string>;
}

export function pythonDump(tarPath: string): PyMember[] {
  return JSON.parse(sh('python3', ['-c', PY_DUMP, tarPath]).toString()) as PyMember[];
}

const pyTypes: Record<string, TarHeader['type']> = {
  '0': 'file', '\0': 'file', '7': 'file', '1': 'hardlink', '2': 'symlink', '3': 'char', '4': 'block', '5': 'directory', '6': 'fifo',
};

/** "sec[.frac]" as exact integers, independently of the code under test. */
function paxTime(s: string): TarTime {
  const [w, f = ''] = s.split('.');
  const neg = w.startsWith('-');
  const sec = Number(w);
  const frac = Number(f.slice(0, 9).padEnd(9, '0'));
  return neg && frac ? { sec: sec - 1, nsec: 1e9 - frac } : { sec, nsec: frac };
}

const FOLDED = new Set(['path', 'linkpath', 'size', 'uid', 'gid', 'uname', 'gname', 'mtime', 'atime', 'ctime']);

/** Every field of our header must equal what Python's tarfile reads. */
export function assertSameAsPython(ours: TarHeader, py: PyMember): void {
  const where = `entry ${ours.name}`;
  // tarfile strips the trailing '/' of directory names; ours keeps the name raw.
  assert.equal(ours.type === 'directory' ? ours.name.replace(/\/+$/, '') : ours.name, py.name, where);
  assert.equal(ours.type, pyTypes[py.type], where);
  assert.equal(ours.mode, py.mode & 0o7777, where);
  assert.equal(ours.uid, py.uid, where);
  assert.equal(ours.gid, py.gid, where);
  assert.equal(ours.uname, py.uname, where);
  assert.equal(ours.gname, py.gname, where);
  assert.equal(ours.size, py.size, where);
  assert.equal(ours.linkname, py.linkname, where);
  assert.equal(ours.devmajor, py.devmajor, where);
  assert.equal(ours.devminor, py.devminor, where);
  const pax = py.pax;
  assert.deepEqual(ours.mtime, pax.mtime ? paxTime(Buffer.from(pax.mtime, 'hex').toString()) : { sec: Number(py.mtime), nsec: 0 }, where);
  assert.deepEqual(ours.atime, pax.atime ? paxTime(Buffer.from(pax.atime, 'hex').toString()) : undefined, where);
  assert.deepEqual(ours.ctime, pax.ctime ? paxTime(Buffer.from(pax.ctime, 'hex').toString()) : undefined, where);
  let others = 0;
  for (const [k, hex] of Object.entries(pax)) {
    if (FOLDED.has(k)) continue;
    others++;
    const v = k.startsWith('SCHILY.xattr.') ? ours.xattrs.get(k.slice(13)) : ours.pax.get(k);
    assert.equal(v?.toString('hex'), hex, `${where}: PAX ${k}`);
  }
  assert.equal(ours.xattrs.size + ours.pax.size, others, `${where}: PAX record count`);
}
