import { statSync } from 'node:fs';
import type { Command } from 'commander';
import type { CliContext } from './main.js';
import { eachReporting, inputStream, outputStream, printJSON, shortId } from './io.js';
import { ago, table } from './human.js';
import { humanSize } from '../util/human-size.js';
import { invalidArgument } from '../errors.js';
import type { DeleteResponse } from '../image/remove-image.js';

const collect = (v: string, prev: string[]) => [...prev, v];

function printDeletes(rows: DeleteResponse[]): void {
  for (const r of rows) process.stdout.write('Untagged' in r ? `Untagged: ${r.Untagged}\n` : `Deleted: ${r.Deleted}\n`);
}

/** `--filter key=value` for images: only `dangling` is understood, anything else is refused. */
function imageFilters(filters: string[]): { dangling?: boolean } {
  const out: { dangling?: boolean } = {};
  for (const f of filters) {
    const [k, v] = f.split('=', 2);
    if (k !== 'dangling' || (v !== 'true' && v !== 'false')) throw invalidArgument(`invalid filter '${f}': supported: dangling=true|false`);
    out.dangling = v === 'true';
  }
  return out;
}

export function registerImageCommands(program: Command, ctx: CliContext): void {
  const image = program.command('image').description('Manage images');

  const load = (cmd: Command) =>
    cmd
      .command('load')
      .description('Load images from a tar archive (docker save format or OCI layout) or STDIN')
      .option('-i, --input <path>', 'read from a tar archive file, or an OCI image-layout directory, instead of STDIN')
      .option('-q, --quiet', 'suppress the load output')
      .action(async (o: { input?: string; quiet?: boolean }) => {
        const e = await ctx.engine();
        const isDir = o.input !== undefined && o.input !== '-' && statSync(o.input, { throwIfNoEntry: false })?.isDirectory();
        const loaded = await e.load(isDir ? { dir: o.input! } : inputStream(o.input, 'an archive'));
        if (!o.quiet) for (const l of loaded) process.stdout.write(`${l}\n`);
      });
  load(program);
  load(image);

  const save = (cmd: Command) =>
    cmd
      .command('save')
      .description('Save one or more images to a tar archive (streamed to STDOUT by default)')
      .argument('<image...>')
      .option('-o, --output <path>', "write to a file instead of STDOUT; with --format oci, a path ending in '/' or an existing directory gets an OCI layout directory")
      .option('--format <format>', 'docker (docker save layout, also a valid OCI layout) or oci', 'docker')
      .action(async (images: string[], o: { output?: string; format: string }) => {
        if (o.format !== 'docker' && o.format !== 'oci') throw invalidArgument(`unknown format "${o.format}": want docker or oci`);
        const e = await ctx.engine();
        const toDir = o.format === 'oci' && o.output !== undefined && (o.output.endsWith('/') || statSync(o.output, { throwIfNoEntry: false })?.isDirectory());
        if (toDir) return e.saveToDir(images, o.output!);
        await outputStream(await e.save(images, o.format), o.output);
      });
  save(program);
  save(image);

  const imp = (cmd: Command) =>
    cmd
      .command('import')
      .description('Import the contents from a tarball to create a filesystem image')
      .argument('<file>', "a tar archive (plain, gzip or zstd), or '-' for STDIN")
      .argument('[reference]', 'REPOSITORY[:TAG]')
      .option('-c, --change <instruction>', 'apply a Dockerfile instruction to the created image', collect, [])
      .option('-m, --message <message>', 'set the commit message for the imported image')
      .action(async (file: string, reference: string | undefined, o: { change: string[]; message?: string }) => {
        const e = await ctx.engine();
        const img = await e.import(inputStream(file, 'a tar archive'), { reference, changes: o.change, message: o.message });
        process.stdout.write(`${img.id}\n`);
      });
  imp(program);
  imp(image);

  const images = (cmd: Command, name: string) =>
    cmd
      .command(name)
      .description('List images')
      .argument('[reference]', 'only images whose name matches REPOSITORY[:TAG]')
      .option('-a, --all', 'show all images (default hides intermediate images)')
      .option('-q, --quiet', 'only show image IDs')
      .option('--digests', 'show digests')
      .option('--no-trunc', "don't truncate output")
      .option('-f, --filter <filter>', 'filter output (dangling=true|false)', collect, [])
      .action(async (reference: string | undefined, o: { all?: boolean; quiet?: boolean; digests?: boolean; trunc: boolean; filter: string[] }) => {
        const e = await ctx.engine();
        let list = await e.images({ all: o.all, ...imageFilters(o.filter) });
        if (reference !== undefined) {
          const [repo, tag] = reference.split(':');
          list = list.filter((i) => i.RepoTags.some((t) => t.split(':')[0] === repo && (tag === undefined || t.split(':')[1] === tag)));
        }
        if (o.quiet) {
          for (const id of new Set(list.map((i) => shortId(i.Id, !o.trunc)))) process.stdout.write(`${id}\n`);
          return;
        }
        const rows: string[][] = [];
        for (const i of list) {
          const tags = i.RepoTags.length > 0 ? i.RepoTags : ['<none>:<none>'];
          for (const t of tags) {
            const colon = t.lastIndexOf(':');
            const repo = t.slice(0, colon);
            const digest = i.RepoDigests.find((d) => d.startsWith(`${repo}@`))?.split('@')[1] ?? '<none>';
            rows.push([repo, t.slice(colon + 1), ...(o.digests ? [digest] : []), shortId(i.Id, !o.trunc), ago(new Date(i.Created * 1000).toISOString()), humanSize(i.Size)]);
          }
        }
        process.stdout.write(table(['REPOSITORY', 'TAG', ...(o.digests ? ['DIGEST'] : []), 'IMAGE ID', 'CREATED', 'SIZE'], rows));
      });
  images(program, 'images');
  images(image, 'ls');

  image
    .command('inspect')
    .description('Display detailed information on one or more images')
    .argument('<image...>')
    .action(async (refs: string[]) => {
      const e = await ctx.engine();
      printJSON(await Promise.all(refs.map((r) => e.inspectImage(r))));
    });

  const history = (cmd: Command) =>
    cmd
      .command('history')
      .description('Show the history of an image')
      .argument('<image>')
      .option('--no-trunc', "don't truncate output")
      .option('-q, --quiet', 'only show image IDs')
      .option('-H, --human', 'print sizes and dates in human readable format', true)
      .action(async (ref: string, o: { trunc: boolean; quiet?: boolean }) => {
        const e = await ctx.engine();
        const rows = await e.history(ref);
        if (o.quiet) {
          for (const r of rows) process.stdout.write(`${r.Id === '<missing>' ? r.Id : shortId(r.Id, !o.trunc)}\n`);
          return;
        }
        const createdBy = (s: string) => (o.trunc && s.length > 45 ? `${s.slice(0, 44)}…` : s);
        process.stdout.write(
          table(
            ['IMAGE', 'CREATED', 'CREATED BY', 'SIZE', 'COMMENT'],
            rows.map((r) => [r.Id === '<missing>' ? r.Id : shortId(r.Id, !o.trunc), ago(new Date(r.Created * 1000).toISOString()), createdBy(r.CreatedBy), humanSize(r.Size), r.Comment]),
          ),
        );
      });
  history(program);
  history(image);

  const tag = (cmd: Command) =>
    cmd
      .command('tag')
      .description('Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE')
      .argument('<source>')
      .argument('<target>')
      .action(async (source: string, target: string) => {
        await (await ctx.engine()).tag(source, target);
      });
  tag(program);
  tag(image);

  const rmi = (cmd: Command, name: string) =>
    cmd
      .command(name)
      .description('Remove one or more images')
      .argument('<image...>')
      .option('-f, --force', 'force removal of the image')
      .action(async (refs: string[], o: { force?: boolean }) => {
        const e = await ctx.engine();
        await eachReporting(refs, async (r) => printDeletes(await e.rmi(r, { force: o.force })));
      });
  rmi(program, 'rmi');
  rmi(image, 'rm');

  image
    .command('prune')
    .description('Remove unused images')
    .option('-a, --all', 'remove all unused images, not just dangling ones')
    .option('-f, --force', 'do not prompt for confirmation')
    .action(async (o: { all?: boolean }) => {
      const e = await ctx.engine();
      const r = await e.pruneImages({ all: o.all });
      if (r.ImagesDeleted.length > 0) {
        process.stdout.write('Deleted Images:\n');
        printDeletes(r.ImagesDeleted);
        process.stdout.write('\n');
      }
      process.stdout.write(`Total reclaimed space: ${humanSize(r.SpaceReclaimed)}\n`);
    });
}
