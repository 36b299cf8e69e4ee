import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { run } from '../fixtures/run.js';
import { startRegistry, type Registry } from '../fixtures/registry.js';
import { requireCap } from '../helpers/caps.js';

const BIN = resolve(import.meta.dirname, '../../bin/strata');
const PTY = resolve(import.meta.dirname, '../fixtures/pty-run.py');

describe('strata login asks at the terminal, as docker login does', () => {
  let work: string;
  let reg: Registry | undefined;
  const env = () => ({ ...process.env, STRATA_CONFIG: join(work, 'strata'), DOCKER_CONFIG: join(work, 'docker') });
  const strataArgs = (args: string[]) => [BIN, '--data-root', join(work, 'root'), '-s', 'vfs', ...args];
  /** strata on a terminal, typing each answer after its prompt. */
  const onTerminal = (answers: Array<[string, string]>, args: string[]) => run('python3', [PTY, JSON.stringify(answers), ...strataArgs(args)], { env: env() });
  const storedAuth = () => {
    const config = JSON.parse(readFileSync(join(work, 'strata', 'config.json'), 'utf8')) as { auths: Record<string, { auth: string }> };
    return Buffer.from(config.auths[reg!.url]!.auth, 'base64').toString();
  };

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'strata-login-'));
    if (existsSync('/usr/bin/docker-registry')) reg = await startRegistry({ auth: 'basic' });
  });
  after(async () => {
    await reg?.stop();
    await rm(work, { recursive: true, force: true });
  });

  it('prompts for the username and a hidden password; a wrong password fails and stores nothing', async (t) => {
    if (!requireCap(t, 'docker-registry', reg !== undefined)) return;
    const wrong = await onTerminal([['Username: ', `${reg!.username}\r`], ['Password: ', 'not-it\r']], ['login', reg!.url]);
    assert.notEqual(wrong.code, 0);
    assert.match(wrong.stdout, /incorrect username or password|unauthorized/i);
    assert.ok(!existsSync(join(work, 'strata', 'config.json')));

    const ok = await onTerminal([['Username: ', `${reg!.username}\r`], ['Password: ', `${reg!.password}\r`]], ['login', reg!.url]);
    assert.equal(ok.code, 0, ok.stdout);
    assert.match(ok.stdout, new RegExp(`Username: ${reg!.username}\\r?\\n`));
    assert.match(ok.stdout, /Login Succeeded/);
    assert.ok(!ok.stdout.includes(reg!.password!), 'the password was echoed');
    assert.equal(storedAuth(), reg!.creds);
  });

  it('with -u only the password is asked; backspace edits it', async (t) => {
    if (!requireCap(t, 'docker-registry', reg !== undefined)) return;
    const typed = `${reg!.password}x\x7f\r`;
    const r = await onTerminal([['Password: ', typed]], ['login', '-u', reg!.username!, reg!.url]);
    assert.equal(r.code, 0, r.stdout);
    assert.ok(!r.stdout.includes('Username:'));
    assert.equal(storedAuth(), reg!.creds);
  });

  it('without a terminal it refuses to prompt, as docker does', async () => {
    const r = await run(BIN, strataArgs(['login', '127.0.0.1:1']).slice(1), { env: env() });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /Cannot perform an interactive login from a non TTY device/);
    const s = await run(BIN, strataArgs(['login', '--password-stdin', '127.0.0.1:1']).slice(1), { env: env() });
    assert.match(s.stderr, /Must provide --username with --password-stdin/);
  });
});
