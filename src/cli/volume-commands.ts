import type { Command } from 'commander';
import type { CliContext } from './main.js';
import { eachReporting, printJSON } from './io.js';
import { table } from './human.js';
import { humanSize } from '../util/human-size.js';
import { invalidArgument } from '../errors.js';

const collect = (v: string, prev: string[]) => [...prev, v];

function pairs(list: string[], what: string, valueRequired: boolean): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of list) {
    const i = p.indexOf('=');
    if (i === 0 || (valueRequired && i < 0)) throw invalidArgument(`invalid ${what} '${p}': expected key=value`);
    out[i < 0 ? p : p.slice(0, i)] = i < 0 ? '' : p.slice(i + 1);
  }
  return out;
}

export function registerVolumeCommands(program: Command, ctx: CliContext): void {
  const volume = program.command('volume').description('Manage volumes');

  volume
    .command('create')
    .description('Create a volume')
    .argument('[name]')
    .option('-d, --driver <name>', 'specify volume driver name', 'local')
    .option('--label <k=v>', 'set metadata for a volume', collect, [])
    .option('-o, --opt <k=v>', 'set driver specific options (type, device, o)', collect, [])
    .action(async (name: string | undefined, o: { driver: string; label: string[]; opt: string[] }) => {
      const v = await (await ctx.engine()).createVolume({ name, driver: o.driver, labels: pairs(o.label, 'label', false), driverOpts: pairs(o.opt, 'option', true) });
      process.stdout.write(`${v.Name}\n`);
    });

  volume
    .command('ls')
    .alias('list')
    .description('List volumes')
    .option('-q, --quiet', 'only display volume names')
    .option('-f, --filter <filter>', 'provide filter values (dangling=true|false, name=, label=, driver=)', collect, [])
    .action(async (o: { quiet?: boolean; filter: string[] }) => {
      const list = await (await ctx.engine()).volumes(o.filter);
      if (o.quiet) {
        for (const v of list) process.stdout.write(`${v.Name}\n`);
        return;
      }
      process.stdout.write(table(['DRIVER', 'VOLUME NAME'], list.map((v) => [v.Driver, v.Name])));
    });

  volume
    .command('inspect')
    .description('Display detailed information on one or more volumes')
    .argument('<volume...>')
    .action(async (names: string[]) => {
      const e = await ctx.engine();
      printJSON(await Promise.all(names.map((n) => e.inspectVolume(n))));
    });

  volume
    .command('rm')
    .alias('remove')
    .description('Remove one or more volumes; a volume in use by a container cannot be removed')
    .argument('<volume...>')
    .option('-f, --force', 'do not fail on volumes that do not exist')
    .action(async (names: string[], o: { force?: boolean }) => {
      const e = await ctx.engine();
      await eachReporting(names, async (n) => {
        await e.removeVolume(n, o);
        process.stdout.write(`${n}\n`);
      });
    });

  volume
    .command('prune')
    .description('Remove unused anonymous volumes (all unused volumes with -a)')
    .option('-a, --all', 'remove all unused volumes, not just anonymous ones')
    .option('--filter <filter>', 'provide filter values (label=...)', collect, [])
    .option('-f, --force', 'do not prompt for confirmation')
    .action(async (o: { all?: boolean; filter: string[] }) => {
      const r = await (await ctx.engine()).pruneVolumes({ all: o.all, filters: o.filter });
      if (r.VolumesDeleted.length > 0) process.stdout.write(`Deleted Volumes:\n${r.VolumesDeleted.join('\n')}\n\n`);
      process.stdout.write(`Total reclaimed space: ${humanSize(r.SpaceReclaimed)}\n`);
    });
}
