import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, createReadStream, lchownSync, linkSync, mkdirSync, symlinkSync, writeFileSync, constants as C } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { native } from '../../src/native/native.js';

const here = dirname(fileURLToPath(import.meta.url));

/** A tar built by python's tarfile from a list of entries (see make-tar.py for the fields). */
export function pythonTar(entries: object[]): Buffer {
  return execFileSync('python3', [join(here, 'make-tar.py')], { input: JSON.stringify(entries), maxBuffer: 1 << 28 });
}

export async function* chunks(buf: Buffer, size = 7000): AsyncGenerator<Buffer> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

export function fileChunks(path: string): AsyncIterable<Buffer> {
  return createReadStream(path, { highWaterMark: 1 << 20 });
}

/** A Readable's bytes, for tars small enough for a test. */
export async function collect(src: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of src) parts.push(b);
  return Buffer.concat(parts);
}

export function run(cmd: string, args: string[], input?: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    p.stdout.on('data', (b: Buffer) => out.push(b));
    p.stderr.on('data', (b: Buffer) => err.push(b));
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve(Buffer.concat(out)) : reject(new Error(`${cmd} ${args.join(' ')}: exit ${code}: ${Buffer.concat(err)}`))));
    p.stdin.end(input ?? Buffer.alloc(0));
  });
}

function put(path: string, data: Buffer | string, mode: number, uid: number, gid: number, mtimeSec: number, mtimeNsec: number): void {
  writeFileSync(path, data);
  lchownSync(path, uid, gid);
  chmodSync(path, mode);
  native.lutimes(path, mtimeSec, 0, mtimeSec, mtimeNsec);
}

/** A capability set (cap_net_bind_service=ep) in the on-disk vfs_cap_data v2 form. */
export const CAP_NET_BIND = Buffer.from('0100000200040000000000000000000000000000', 'hex');

/**
 * A tree with every kind of entry a layer carries: owners, setuid/setgid/sticky, xattrs incl. a file
 * capability, nanosecond mtimes, hardlinks, symlinks, devices, a fifo, long and non-ASCII names, a big file.
 */
export function buildRichTree(root: string): void {
  const d = (rel: string, mode: number, uid = 0, gid = 0) => {
    mkdirSync(join(root, rel));
    lchownSync(join(root, rel), uid, gid);
    chmodSync(join(root, rel), mode);
  };
  d('etc', 0o755);
  d('home', 0o755);
  d('home/user', 0o750, 1000, 1000);
  d('tmp', 0o1777);
  d('srv', 0o2775, 0, 50);
  put(join(root, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\n', 0o644, 0, 0, 1600000000, 123456789);
  put(join(root, 'home/user/.profile'), 'PATH=/bin\n', 0o600, 1000, 1000, 1600000001, 1);
  put(join(root, 'home/user/big.bin'), randomBytes(3 * 1024 * 1024 + 17), 0o640, 1000, 100, 1600000002, 999999999);
  put(join(root, 'empty'), '', 0o444, 7, 8, 1600000003, 500);
  put(join(root, 'suid'), '#!/bin/sh\n', 0o4755, 0, 0, 1600000004, 42);
  put(join(root, 'sgid'), '#!/bin/sh\n', 0o2711, 0, 12, 1600000005, 43);
  put(join(root, 'capped'), 'x', 0o755, 0, 0, 1600000006, 44);
  native.lsetxattr(join(root, 'capped'), 'security.capability', CAP_NET_BIND);
  native.lsetxattr(join(root, 'etc/passwd'), 'user.comment', Buffer.from('hello\0binary\xff'));
  native.lsetxattr(join(root, 'srv'), 'user.dirattr', Buffer.from('1'));
  native.lsetxattr(join(root, 'srv'), 'trusted.other', Buffer.from('t'));
  linkSync(join(root, 'etc/passwd'), join(root, 'passwd-link'));
  linkSync(join(root, 'etc/passwd'), join(root, 'home/user/passwd-link2'));
  symlinkSync('etc/passwd', join(root, 'rel-link'));
  symlinkSync('/etc/shadow', join(root, 'abs-link'));
  symlinkSync('nowhere/at/all', join(root, 'dangling'));
  lchownSync(join(root, 'dangling'), 33, 33);
  native.mknod(join(root, 'null'), C.S_IFCHR | 0o666, 1, 3);
  native.mknod(join(root, 'loop9'), C.S_IFBLK | 0o660, 7, 9);
  native.mknod(join(root, 'fifo'), C.S_IFIFO | 0o620, 0, 0);
  const long = 'a'.repeat(120) + '/' + 'b'.repeat(150);
  mkdirSync(join(root, 'a'.repeat(120)));
  put(join(root, long), 'long', 0o644, 0, 0, 1600000007, 7);
  put(join(root, 'ünïcødé файл'), 'utf8', 0o644, 0, 0, 1600000008, 8);
  native.lutimes(join(root, 'rel-link'), 1600000009, 0, 1600000009, 9);
  for (const dir of ['home/user', 'home', 'etc', 'tmp', 'srv', 'a'.repeat(120), '']) {
    native.lutimes(join(root, dir), 1500000000, 0, 1500000000, 1000 + dir.length);
  }
}

/** GNU tar's PAX archive of a tree, with xattrs and numeric owners. */
export function gnuTar(root: string, out: string): void {
  execFileSync('tar', ['--xattrs', "--xattrs-include=*", '--numeric-owner', '--format=pax', '-C', root, '-cpf', out, '.']);
}

export function gnuExtract(tarPath: string, dest: string): void {
  execFileSync('tar', ['--xattrs', "--xattrs-include=*", '--numeric-owner', '-xpf', tarPath, '-C', dest]);
}
