import type { Command } from 'commander';
import type { CliContext } from './main.js';
import { invalidArgument } from '../errors.js';
import { promptLine } from './prompt.js';
import { ProgressRenderer, type ProgressEvent } from '../registry/progress.js';

async function readStdin(): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of process.stdin as AsyncIterable<Buffer>) parts.push(c);
  return Buffer.concat(parts).toString('utf8').replace(/\r?\n$/, '');
}

/** `pull`, `push`, `login`, `logout`, with docker's flags and output. */
export function registerRegistryCommands(program: Command, ctx: CliContext): void {
  const withProgress = async <T>(quiet: boolean | undefined, fn: () => Promise<T>): Promise<T> => {
    const e = await ctx.engine();
    const renderer = new ProgressRenderer(process.stdout);
    const onProgress = (p: ProgressEvent) => {
      if (!quiet) renderer.write(p);
    };
    e.on('progress', onProgress);
    try {
      return await fn();
    } finally {
      e.off('progress', onProgress);
    }
  };

  const pull = (cmd: Command) =>
    cmd
      .command('pull')
      .description('Download an image from a registry')
      .argument('<name>', 'NAME[:TAG|@DIGEST]')
      .option('-a, --all-tags', 'download all tagged images in the repository')
      .option('--platform <platform>', 'os/arch[/variant] to pull from a multi-platform image')
      .option('-q, --quiet', 'suppress verbose output')
      .action(async (name: string, o: { allTags?: boolean; platform?: string; quiet?: boolean }) => {
        const e = await ctx.engine();
        const results = await withProgress(o.quiet, () => e.pull(name, { allTags: o.allTags, platform: o.platform }));
        if (o.quiet) for (const r of results) process.stdout.write(`${r.reference}\n`);
      });
  pull(program);
  pull(program.commands.find((c) => c.name() === 'image') ?? program.command('image'));

  const push = (cmd: Command) =>
    cmd
      .command('push')
      .description('Upload an image to a registry')
      .argument('<name>', 'NAME[:TAG|@DIGEST]')
      .option('-q, --quiet', 'suppress verbose output')
      .action(async (name: string, o: { quiet?: boolean }) => {
        const e = await ctx.engine();
        const r = await withProgress(o.quiet, () => e.push(name));
        if (o.quiet) process.stdout.write(`${r.reference}\n`);
      });
  push(program);
  push(program.commands.find((c) => c.name() === 'image')!);

  program
    .command('login')
    .description('Log in to a registry (credentials are kept in $STRATA_CONFIG/config.json, default ~/.strata/config.json)')
    .argument('[server]', 'registry host (default Docker Hub)')
    .option('-u, --username <username>', 'username')
    .option('-p, --password <password>', 'password')
    .option('--password-stdin', 'take the password from stdin')
    .action(async (server: string | undefined, o: { username?: string; password?: string; passwordStdin?: boolean }) => {
      if (o.password !== undefined && o.passwordStdin) throw invalidArgument('--password and --password-stdin are mutually exclusive');
      if (o.passwordStdin && o.username === undefined) throw invalidArgument('Must provide --username with --password-stdin');
      if (o.password !== undefined) process.stderr.write('WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n');
      // Asked at the terminal, as docker does, for whatever the flags leave out.
      const username = o.username ?? (await promptLine('Username: ', false)).trim();
      if (username === '') throw invalidArgument('Username cannot be empty');
      const password = o.passwordStdin ? await readStdin() : (o.password ?? (await promptLine('Password: ', true)));
      if (password === '') throw invalidArgument('Password cannot be empty');
      await (await ctx.engine()).login(server, { username, password });
      process.stdout.write('Login Succeeded\n');
    });

  program
    .command('logout')
    .description('Log out from a registry')
    .argument('[server]', 'registry host (default Docker Hub)')
    .action(async (server: string | undefined) => {
      const { host, removed } = await (await ctx.engine()).logout(server);
      process.stdout.write(removed ? `Removing login credentials for ${host}\n` : `Not logged in to ${host}\n`);
    });
}
