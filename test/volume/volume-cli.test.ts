import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { run, runOk } from '../fixtures/run.js';
import { unmountUnder } from '../fixtures/unmount.js';
import { storeListing } from '../helpers/engine.js';

const BIN = resolve(import.meta.dirname, '../../bin/strata');

describe('volume and cp commands of the CLI', () => {
  let work: string;
  let root: string;
  const strata = (args: string[]) => run(BIN, ['--data-root', root, '-s', 'vfs', ...args]);
  const ok = async (args: string[]) => {
    const r = await strata(args);
    assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  /** A failure: one `Error:` line, the exit code of its class, the store as it was. */
  const fails = async (args: string[], code: number, pattern: RegExp) => {
    const before = await storeListing(root);
    const r = await strata(args);
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /^Error: [^\n]+\n$/);
    assert.match(r.stderr, pattern);
    assert.deepEqual(await storeListing(root), before);
  };

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'strata-volcli-'));
    root = join(work, 'root');
    await mkdir(join(work, 'rootfs/data'), { recursive: true });
    await writeFile(join(work, 'rootfs/data/seed'), 'seed\n');
    await runOk('tar', ['-C', join(work, 'rootfs'), '-cf', join(work, 'rootfs.tar'), '.']);
    await ok(['import', '--change', 'VOLUME /data', join(work, 'rootfs.tar'), 'seeded:1']);
  });
  after(async () => {
    unmountUnder(work);
    await rm(work, { recursive: true, force: true });
  });

  it('volume create/ls/inspect/rm/prune, and the in-use rule', async () => {
    assert.equal(await ok(['volume', 'create', '--label', 'k=v', 'named']), 'named\n');
    assert.match(await ok(['volume', 'ls']), /^DRIVER\s+VOLUME NAME\nlocal\s+named\n$/);
    const [v] = JSON.parse(await ok(['volume', 'inspect', 'named'])) as Array<{ Name: string; Labels: object; Driver: string; Scope: string }>;
    assert.deepEqual([v!.Name, v!.Labels, v!.Driver, v!.Scope], ['named', { k: 'v' }, 'local', 'local']);
    const id = (await ok(['create', '--name', 'user', '-v', 'named:/n', 'seeded:1'])).trim();
    await fails(['volume', 'rm', 'named'], 6, new RegExp(`volume is in use - \\[${id}\\]`));
    await fails(['volume', 'create', 'a'], 2, /invalid characters for a local volume name/);
    await fails(['create', '-v', '/no/such/dir:/x', 'seeded:1'], 2, /bind source path does not exist: \/no\/such\/dir/);
    await fails(['create', '--mount', 'type=weird,target=/x', 'seeded:1'], 2, /invalid mount type "weird"/);
    // The image VOLUME gave the container an anonymous volume filled with /data.
    const anon = (await ok(['volume', 'ls', '-q', '--filter', 'dangling=false'])).trim().split('\n').filter((n) => n !== 'named');
    assert.equal(anon.length, 1);
    assert.equal(await readFile(join(root, 'volumes', anon[0]!, '_data/seed'), 'utf8'), 'seed\n');
    const df = await ok(['system', 'df']);
    assert.match(df, /\nLocal Volumes\s+2\s+2\s+5B\s+0B \(0%\)\n/);
    assert.match(await ok(['system', 'df', '-v']), new RegExp(`\\n${anon[0]}\\s+1\\s+5B\\n`));
    await ok(['rm', '-v', 'user']);
    assert.equal((await ok(['volume', 'ls', '-q'])).trim(), 'named', 'rm -v took the anonymous volume only');
    assert.match(await ok(['volume', 'prune', '-a', '-f']), /Deleted Volumes:\nnamed\n/);
  });

  it('cp through files and tar streams on stdin/stdout', async () => {
    await ok(['create', '--name', 'box', 'seeded:1']);
    await writeFile(join(work, 'hello'), 'hello\n');
    await ok(['cp', join(work, 'hello'), 'box:/data/']);
    await ok(['cp', 'box:/data', join(work, 'out')]);
    assert.equal(await readFile(join(work, 'out/hello'), 'utf8'), 'hello\n');
    assert.equal(await readFile(join(work, 'out/seed'), 'utf8'), 'seed\n');
    const tar = await runOk('sh', ['-c', `"${BIN}" --data-root "${root}" -s vfs cp box:/data - | tar -t`]);
    assert.deepEqual(tar.stdout.trim().split('\n').sort(), ['data/', 'data/hello', 'data/seed']);
    await runOk('sh', ['-c', `tar -C "${work}" -c hello | "${BIN}" --data-root "${root}" -s vfs cp - box:/`]);
    assert.deepEqual(await ok(['diff', 'box']), 'A /hello\n', 'the volume path stays out of the layer');
    await fails(['cp', join(work, 'hello'), 'nobox:/'], 5, /No such container: nobox/);
    await fails(['cp', join(work, 'hello'), 'box:/missing/parent'], 5, /parent directory does not exist/);
    await fails(['cp', 'box:/a', 'box:/b'], 2, /copying between containers is not supported/);
    await ok(['rm', '-v', 'box']);
  });
});
