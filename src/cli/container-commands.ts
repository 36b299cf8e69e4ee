import type { Command } from 'commander';
import type { CliContext } from './main.js';
import { eachReporting, inputStream, outputStream, printJSON, shortId } from './io.js';
import { ago, table } from './human.js';
import { humanSize } from '../util/human-size.js';
import { invalidArgument, isStrataError, notFound } from '../errors.js';
import { parseStorageOpts } from '../config.js';

const collect = (v: string, prev: string[]) => [...prev, v];

function labels(pairs: string[]): Record<string, string> {
  return Object.fromEntries(pairs.map((l) => [l.split('=')[0]!, l.includes('=') ? l.slice(l.indexOf('=') + 1) : '']));
}

export function registerContainerCommands(program: Command, ctx: CliContext): void {
  const container = program.command('container').description('Manage containers');

  const create = (cmd: Command) =>
    cmd
      .command('create')
      .description('Create a new container')
      .argument('<image>')
      .argument('[command...]')
      .passThroughOptions()
      .option('--name <name>', 'assign a name to the container')
      .option('-e, --env <KEY=VALUE>', 'set environment variables', collect, [])
      .option('-w, --workdir <dir>', 'working directory inside the container')
      .option('-u, --user <user>', 'username or UID')
      .option('-h, --hostname <name>', 'container host name')
      .option('-l, --label <k=v>', 'set metadata on a container', collect, [])
      .option('--entrypoint <cmd>', 'overwrite the default ENTRYPOINT of the image')
      .option('--storage-opt <k=v>', 'storage driver options for the container', collect, [])
      .option('-v, --volume <spec>', 'bind mount a volume ([SOURCE:]TARGET[:ro|rw|nocopy])', collect, [])
      .option('--mount <csv>', 'attach a filesystem mount (type=volume|bind|tmpfs,source=,target=,readonly,volume-nocopy)', collect, [])
      .option('--volumes-from <container[:ro|rw]>', 'mount volumes from the specified container', collect, [])
      .option('--read-only', "mount the container's root filesystem as read only")
      .action(async (image: string, command: string[], o: { name?: string; env: string[]; workdir?: string; user?: string; hostname?: string; label: string[]; entrypoint?: string; storageOpt: string[]; volume: string[]; mount: string[]; volumesFrom: string[]; readOnly?: boolean }) => {
        const e = await ctx.engine();
        const c = await e.create({
          image,
          name: o.name,
          cmd: command,
          env: o.env,
          workingDir: o.workdir,
          user: o.user,
          hostname: o.hostname,
          labels: labels(o.label),
          entrypoint: o.entrypoint !== undefined ? [o.entrypoint] : undefined,
          storageOpt: o.storageOpt.length > 0 ? parseStorageOpts(o.storageOpt) : undefined,
          mounts: { volumes: o.volume, mounts: o.mount, volumesFrom: o.volumesFrom, readOnly: o.readOnly },
        });
        process.stdout.write(`${c.ID}\n`);
      });
  create(program);
  create(container);

  const ps = (cmd: Command, name: string) =>
    cmd
      .command(name)
      .description('List containers')
      .option('-a, --all', 'show all containers (default shows just running)')
      .option('-q, --quiet', 'only display container IDs')
      .option('-s, --size', 'display total file sizes')
      .option('--no-trunc', "don't truncate output")
      .action(async (o: { all?: boolean; quiet?: boolean; size?: boolean; trunc: boolean }) => {
        const e = await ctx.engine();
        const list = await e.containers({ all: o.all, size: o.size && !o.quiet });
        if (o.quiet) {
          for (const c of list) process.stdout.write(`${shortId(c.Id, !o.trunc)}\n`);
          return;
        }
        const cmdCol = (s: string) => JSON.stringify(o.trunc && s.length > 20 ? `${s.slice(0, 19)}…` : s);
        const rows = list.map((c) => [
          shortId(c.Id, !o.trunc),
          c.Image,
          cmdCol(c.Command),
          ago(new Date(c.Created * 1000).toISOString()),
          c.Status,
          '',
          c.Names.map((n) => n.slice(1)).join(','),
          ...(o.size ? [`${humanSize(c.SizeRw ?? 0)} (virtual ${humanSize(c.SizeRootFs ?? 0)})`] : []),
        ]);
        process.stdout.write(table(['CONTAINER ID', 'IMAGE', 'COMMAND', 'CREATED', 'STATUS', 'PORTS', 'NAMES', ...(o.size ? ['SIZE'] : [])], rows));
      });
  ps(program, 'ps');
  ps(container, 'ls');

  container
    .command('inspect')
    .description('Display detailed information on one or more containers')
    .argument('<container...>')
    .option('-s, --size', 'display total file sizes')
    .action(async (names: string[], o: { size?: boolean }) => {
      const e = await ctx.engine();
      printJSON(await Promise.all(names.map((n) => e.inspectContainer(n, o))));
    });

  program
    .command('inspect')
    .description('Return low-level information on containers or images')
    .argument('<name...>')
    .option('-s, --size', 'display total file sizes if the type is container')
    .option('--type <type>', 'only inspect objects of the given type (container, image)')
    .action(async (names: string[], o: { size?: boolean; type?: string }) => {
      if (o.type !== undefined && o.type !== 'container' && o.type !== 'image') throw invalidArgument(`"${o.type}" is not a valid value for --type`);
      const e = await ctx.engine();
      const out: unknown[] = [];
      for (const n of names) {
        // docker's order: a container by that name or id, else an image.
        const notFoundAsNull = (err: unknown) => (isStrataError(err, 'ErrNotFound') ? null : Promise.reject(err));
        const found = (o.type !== 'image' ? await e.inspectContainer(n, o).catch(notFoundAsNull) : null) ?? (o.type !== 'container' ? await e.inspectImage(n).catch(notFoundAsNull) : null);
        if (found === null) throw notFound(`No such object: ${n}`);
        out.push(found);
      }
      printJSON(out);
    });

  const mount = (cmd: Command) =>
    cmd
      .command('mount')
      .description("Mount a container's filesystem and print its path (reference counted: pair with unmount)")
      .argument('<container>')
      .action(async (name: string) => {
        process.stdout.write(`${await (await ctx.engine()).mount(name)}\n`);
      });
  mount(program);
  mount(container);

  const unmount = (cmd: Command) =>
    cmd
      .command('unmount')
      .alias('umount')
      .description("Release one mount of a container's filesystem")
      .argument('<container>')
      .action(async (name: string) => {
        await (await ctx.engine()).unmount(name);
      });
  unmount(program);
  unmount(container);

  const diff = (cmd: Command) =>
    cmd
      .command('diff')
      .description("Inspect changes to files or directories on a container's filesystem")
      .argument('<container>')
      .action(async (name: string) => {
        for (const c of await (await ctx.engine()).diff(name)) process.stdout.write(`${c.kind} ${c.path}\n`);
      });
  diff(program);
  diff(container);

  const commit = (cmd: Command) =>
    cmd
      .command('commit')
      .description("Create a new image from a container's changes")
      .argument('<container>')
      .argument('[reference]', 'REPOSITORY[:TAG]')
      .option('-a, --author <author>', 'author (e.g., "John Hannibal Smith <hannibal@a-team.com>")')
      .option('-m, --message <message>', 'commit message')
      .option('-c, --change <instruction>', 'apply Dockerfile instruction to the created image', collect, [])
      .option('-p, --pause', 'pause container during commit (nothing runs yet: accepted for compatibility)', true)
      .action(async (name: string, reference: string | undefined, o: { author?: string; message?: string; change: string[] }) => {
        const img = await (await ctx.engine()).commit(name, { reference, author: o.author, message: o.message, changes: o.change });
        process.stdout.write(`${img.id}\n`);
      });
  commit(program);
  commit(container);

  const exp = (cmd: Command) =>
    cmd
      .command('export')
      .description("Export a container's filesystem as a tar archive")
      .argument('<container>')
      .option('-o, --output <file>', 'write to a file, instead of STDOUT')
      .action(async (name: string, o: { output?: string }) => {
        await outputStream(await (await ctx.engine()).export(name), o.output);
      });
  exp(program);
  exp(container);

  const rm = (cmd: Command, name: string) =>
    cmd
      .command(name)
      .description('Remove one or more containers')
      .argument('<container...>')
      .option('-f, --force', 'force the removal of a running container')
      .option('-v, --volumes', 'remove anonymous volumes associated with the container')
      .action(async (names: string[], o: { force?: boolean; volumes?: boolean }) => {
        const e = await ctx.engine();
        await eachReporting(names, async (n) => {
          await e.rm(n, o);
          process.stdout.write(`${n}\n`);
        });
      });
  rm(program, 'rm');
  rm(container, 'rm');

  const cp = (cmd: Command) =>
    cmd
      .command('cp')
      .description('Copy files/folders between a container and the local filesystem (- for a tar stream on stdin/stdout)')
      .argument('<src>', 'CONTAINER:SRC_PATH, LOCALPATH or -')
      .argument('<dst>', 'CONTAINER:DEST_PATH, LOCALPATH or -')
      .option('-a, --archive', 'archive mode (copy all uid/gid information)')
      .option('-L, --follow-link', 'always follow symbol link in SRC_PATH')
      .action(async (srcArg: string, dstArg: string, o: { archive?: boolean; followLink?: boolean }) => {
        const src = splitCpArg(srcArg);
        const dst = splitCpArg(dstArg);
        const opts = { archive: o.archive, followLink: o.followLink };
        if (src.container !== null && dst.container !== null) throw invalidArgument('copying between containers is not supported');
        if (src.container === null && dst.container === null) throw invalidArgument('must specify at least one container source');
        const e = await ctx.engine();
        if (src.container !== null) {
          if (dst.path === '-') await outputStream(await e.copyFromTar(src.container, src.path, opts), undefined);
          else await e.copyFrom(src.container, src.path, dst.path, opts);
          return;
        }
        const source = src.path === '-' ? { tar: inputStream('-', 'a tar archive') } : { path: src.path };
        await e.copyTo(dst.container!, dst.path, source, opts);
      });
  cp(program);
  cp(container);
}

/** docker's splitCpArg: `CONTAINER:PATH`, unless the argument is an absolute or `.`-relative local path. */
function splitCpArg(arg: string): { container: string | null; path: string } {
  const i = arg.indexOf(':');
  if (arg.startsWith('/') || arg.startsWith('.') || i < 0) return { container: null, path: arg };
  if (i === 0) throw invalidArgument(`invalid container name in "${arg}"`);
  return { container: arg.slice(0, i), path: arg.slice(i + 1) };
}
