import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { run, runOk } from '../fixtures/run.js';
import { unmountUnder } from '../fixtures/unmount.js';

const BIN = resolve(import.meta.dirname, '../../bin/strata');

describe('the strata CLI', () => {
  let work: string;
  let root: string;
  let rootfsTar: string;
  const strata = (args: string[], env: NodeJS.ProcessEnv = {}) => run(BIN, ['--data-root', root, '-s', 'vfs', ...args], { env: { ...process.env, ...env } });

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'strata-cli-'));
    root = join(work, 'root');
    await mkdir(join(work, 'rootfs/etc'), { recursive: true });
    await writeFile(join(work, 'rootfs/etc/motd'), 'hi\n');
    rootfsTar = join(work, 'rootfs.tar');
    await runOk('tar', ['-C', join(work, 'rootfs'), '-cf', rootfsTar, '.']);
  });
  after(async () => {
    unmountUnder(work);
    await rm(work, { recursive: true, force: true });
  });

  it('imports, lists, inspects (a JSON array), creates, diffs and commits', async () => {
    const imported = await strata(['import', rootfsTar, 'demo:1']);
    assert.equal(imported.code, 0, imported.stderr);
    assert.match(imported.stdout, /^sha256:[a-f0-9]{64}\n$/);
    const images = await strata(['images']);
    assert.match(images.stdout, /^REPOSITORY\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE\n/);
    assert.match(images.stdout, /\ndemo\s+1\s+[a-f0-9]{12}\s+.+ago\s+3B\n/);
    const inspect = JSON.parse((await strata(['image', 'inspect', 'demo:1'])).stdout) as Array<{ RepoTags: string[] }>;
    assert.ok(Array.isArray(inspect));
    assert.deepEqual(inspect[0]!.RepoTags, ['demo:1']);
    const id = (await strata(['create', '--name', 'c1', 'demo:1'])).stdout.trim();
    assert.match(id, /^[a-f0-9]{64}$/);
    const mounted = (await strata(['mount', 'c1'])).stdout.trim();
    await writeFile(join(mounted, 'etc/motd'), 'changed\n');
    assert.equal((await strata(['unmount', 'c1'])).code, 0);
    assert.equal((await strata(['diff', 'c1'])).stdout, 'C /etc\nC /etc/motd\n');
    const generic = JSON.parse((await strata(['inspect', 'c1'])).stdout) as Array<{ Id: string; GraphDriver: { Name: string } }>;
    assert.equal(generic[0]!.Id, id);
    assert.equal(generic[0]!.GraphDriver.Name, 'vfs');
    const ps = await strata(['ps', '-a', '-s']);
    assert.match(ps.stdout, /CONTAINER ID\s+IMAGE\s+COMMAND\s+CREATED\s+STATUS\s+PORTS\s+NAMES\s+SIZE/);
    assert.match(ps.stdout, /c1\s+8B \(virtual 11B\)/);
    const committed = await strata(['commit', '-m', 'msg', 'c1', 'demo:2']);
    assert.equal(committed.code, 0, committed.stderr);
    const quiet = (await strata(['images', '-q'])).stdout.trim().split('\n');
    assert.equal(quiet.length, 2);
    for (const q of quiet) assert.match(q, /^[a-f0-9]{12}$/);
    assert.match((await strata(['images', '--digests'])).stdout, /^REPOSITORY\s+TAG\s+DIGEST\s+IMAGE ID/);
    assert.equal((await strata(['images', '--filter', 'dangling=true', '-q'])).stdout, '');
    assert.equal((await strata(['tag', 'demo:2', 'demo:1'])).code, 0);
    // The old demo:1 lost its tag but is demo:2's parent: an intermediate image, shown only with -a, as docker does.
    assert.equal((await strata(['images', '--filter', 'dangling=true', '-q'])).stdout, '');
    assert.equal((await strata(['images', '-q'])).stdout.trim().split('\n').length, 1);
    assert.match((await strata(['images', '-a'])).stdout, /\n<none>\s+<none>\s+[a-f0-9]{12}/);
    const badFilter = await strata(['images', '--filter', 'color=red']);
    assert.equal(badFilter.code, 2);
    assert.match(badFilter.stderr, /^Error: invalid filter 'color=red'/);
    assert.match((await strata(['history', 'demo:2'])).stdout, /msg/);
    const df = await strata(['system', 'df']);
    assert.match(df.stdout, /^TYPE\s+TOTAL\s+ACTIVE\s+SIZE\s+RECLAIMABLE\nImages\s+2\s+1\s+/);
    const dfv = await strata(['system', 'df', '-v']);
    assert.match(dfv.stdout, /SHARED SIZE\s+UNIQUE SIZE/);
    const info = await strata(['info']);
    assert.match(info.stdout, /Storage Driver: vfs/);
    assert.match(info.stdout, new RegExp(`Docker Root Dir: ${root}`));
  });

  it('fails with one clear line and the error class exit code, changing nothing', async () => {
    const missing = await strata(['rmi', 'nothere:1']);
    assert.equal(missing.code, 5);
    assert.equal(missing.stderr, 'Error: No such image: nothere:1\n');
    const bad = await strata(['tag', 'demo:1', 'Not/Valid']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^Error: invalid reference format.*\n$/);
    const noCtr = await strata(['diff', 'ghost']);
    assert.equal(noCtr.code, 5);
    assert.equal(noCtr.stderr, 'Error: No such container: ghost\n');
    const badDriver = await run(BIN, ['--data-root', join(work, 'other'), '-s', 'nosuchdriver', 'images']);
    assert.notEqual(badDriver.code, 0);
    assert.match(badDriver.stderr, /^Error: .*nosuchdriver.*\n$/);
  });

  it('takes the data-root and driver from the environment and from a config file', async () => {
    const envRoot = join(work, 'env-root');
    const viaEnv = await run(BIN, ['-s', 'vfs', 'info'], { env: { ...process.env, STRATA_DATA_ROOT: envRoot } });
    assert.match(viaEnv.stdout, new RegExp(`Docker Root Dir: ${envRoot}`));
    const cfg = join(work, 'daemon.json');
    const fileRoot = join(work, 'file-root');
    await writeFile(cfg, JSON.stringify({ 'data-root': fileRoot, 'storage-driver': 'vfs' }));
    const env = { ...process.env };
    delete env.STRATA_DATA_ROOT;
    const viaFile = await run(BIN, ['--config-file', cfg, 'info'], { env });
    assert.equal(viaFile.code, 0, viaFile.stderr);
    assert.match(viaFile.stdout, new RegExp(`Docker Root Dir: ${fileRoot}`));
    assert.match(viaFile.stdout, /Storage Driver: vfs/);
  });

  it('version needs no data-root', async () => {
    const v = await run(BIN, ['version', '--format', 'json']);
    assert.equal(v.code, 0);
    assert.equal((JSON.parse(v.stdout) as { ApiVersion: string }).ApiVersion, '1.51');
  });
});
