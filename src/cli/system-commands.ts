import type { Command } from 'commander';
import type { CliContext } from './main.js';
import { printJSON, shortId } from './io.js';
import { ago, table } from './human.js';
import { humanSize } from '../util/human-size.js';
import { versionInfo } from '../system/system-info.js';

const pct = (part: number, whole: number) => (whole > 0 ? ` (${Math.round((part * 100) / whole)}%)` : '');

export function registerSystemCommands(program: Command, ctx: CliContext): void {
  const system = program.command('system').description('Manage strata');

  system
    .command('df')
    .description('Show disk usage')
    .option('-v, --verbose', 'show detailed information on space usage')
    .action(async (o: { verbose?: boolean }) => {
      const du = await (await ctx.engine()).df();
      const activeImages = du.Images.filter((i) => i.Containers > 0);
      const reclaimImages = du.Images.filter((i) => i.Containers === 0).reduce((n, i) => n + i.Size - i.SharedSize, 0);
      const ctrSize = du.Containers.reduce((n, c) => n + (c.SizeRw ?? 0), 0);
      const running = du.Containers.filter((c) => c.State === 'running');
      const reclaimCtr = du.Containers.filter((c) => c.State !== 'running').reduce((n, c) => n + (c.SizeRw ?? 0), 0);
      const volSize = du.Volumes.reduce((n, v) => n + v.UsageData.Size, 0);
      const reclaimVol = du.Volumes.filter((v) => v.UsageData.RefCount === 0).reduce((n, v) => n + v.UsageData.Size, 0);
      if (!o.verbose) {
        process.stdout.write(
          table(
            ['TYPE', 'TOTAL', 'ACTIVE', 'SIZE', 'RECLAIMABLE'],
            [
              ['Images', String(du.Images.length), String(activeImages.length), humanSize(du.LayersSize), `${humanSize(reclaimImages)}${pct(reclaimImages, du.LayersSize)}`],
              ['Containers', String(du.Containers.length), String(running.length), humanSize(ctrSize), `${humanSize(reclaimCtr)}${pct(reclaimCtr, ctrSize)}`],
              ['Local Volumes', String(du.Volumes.length), String(du.Volumes.filter((v) => v.UsageData.RefCount > 0).length), humanSize(volSize), `${humanSize(reclaimVol)}${pct(reclaimVol, volSize)}`],
              ['Build Cache', '0', '0', '0B', '0B'],
            ],
          ),
        );
        return;
      }
      process.stdout.write('Images space usage:\n\n');
      const imgRows: string[][] = [];
      for (const i of du.Images) {
        for (const t of i.RepoTags.length > 0 ? i.RepoTags : ['<none>:<none>']) {
          const colon = t.lastIndexOf(':');
          imgRows.push([t.slice(0, colon), t.slice(colon + 1), shortId(i.Id), ago(new Date(i.Created * 1000).toISOString()), humanSize(i.Size), humanSize(i.SharedSize), humanSize(i.Size - i.SharedSize), String(i.Containers)]);
        }
      }
      process.stdout.write(table(['REPOSITORY', 'TAG', 'IMAGE ID', 'CREATED', 'SIZE', 'SHARED SIZE', 'UNIQUE SIZE', 'CONTAINERS'], imgRows));
      process.stdout.write('\nContainers space usage:\n\n');
      process.stdout.write(
        table(
          ['CONTAINER ID', 'IMAGE', 'COMMAND', 'LOCAL VOLUMES', 'SIZE', 'CREATED', 'STATUS', 'NAMES'],
          du.Containers.map((c) => [shortId(c.Id), c.Image, JSON.stringify(c.Command), String(c.Mounts.filter((m) => m.Type === 'volume').length), humanSize(c.SizeRw ?? 0), ago(new Date(c.Created * 1000).toISOString()), c.Status, c.Names.map((n) => n.slice(1)).join(',')]),
        ),
      );
      process.stdout.write('\nLocal Volumes space usage:\n\n');
      process.stdout.write(table(['VOLUME NAME', 'LINKS', 'SIZE'], du.Volumes.map((v) => [v.Name, String(v.UsageData.RefCount), humanSize(v.UsageData.Size)])));
      process.stdout.write('\nBuild cache usage: 0B\n');
    });

  system
    .command('prune')
    .description('Remove unused data: stopped containers and dangling images')
    .option('-a, --all', 'remove all unused images, not just dangling ones')
    .option('-f, --force', 'do not prompt for confirmation')
    .action(async (o: { all?: boolean }) => {
      const r = await (await ctx.engine()).prune({ all: o.all });
      if (r.ContainersDeleted.length > 0) process.stdout.write(`Deleted Containers:\n${r.ContainersDeleted.join('\n')}\n\n`);
      if (r.ImagesDeleted.length > 0) {
        process.stdout.write('Deleted Images:\n');
        for (const d of r.ImagesDeleted) process.stdout.write('Untagged' in d ? `untagged: ${d.Untagged}\n` : `deleted: ${d.Deleted}\n`);
        process.stdout.write('\n');
      }
      process.stdout.write(`Total reclaimed space: ${humanSize(r.SpaceReclaimed)}\n`);
    });

  const info = (cmd: Command) =>
    cmd
      .command('info')
      .description('Display system-wide information')
      .option('-f, --format <format>', "'json' prints the raw structure")
      .action(async (o: { format?: string }) => {
        const i = await (await ctx.engine()).info();
        if (o.format === 'json' || o.format === '{{json .}}') return printJSON(i);
        const lines = [
          'Server:',
          ` Containers: ${i.Containers}`,
          `  Running: ${i.ContainersRunning}`,
          `  Paused: ${i.ContainersPaused}`,
          `  Stopped: ${i.ContainersStopped}`,
          ` Images: ${i.Images}`,
          ` Server Version: ${i.ServerVersion}`,
          ` Storage Driver: ${i.Driver}`,
          ...i.DriverStatus.map(([k, v]) => `  ${k}: ${v}`),
          ` Kernel Version: ${i.KernelVersion}`,
          ` Operating System: ${i.OperatingSystem}`,
          ` OSType: ${i.OSType}`,
          ` Architecture: ${i.Architecture}`,
          ` CPUs: ${i.NCPU}`,
          ` Total Memory: ${(i.MemTotal / 2 ** 30).toFixed(2)}GiB`,
          ` Name: ${i.Name}`,
          ` Docker Root Dir: ${i.DockerRootDir}`,
        ];
        process.stdout.write(lines.join('\n') + '\n');
      });
  info(program);
  info(system);

  program
    .command('version')
    .description('Show the strata version information')
    .option('-f, --format <format>', "'json' prints the raw structure")
    .action((o: { format?: string }) => {
      // Needs no data-root: a version check must work before anything is set up.
      const v = versionInfo();
      if (o.format === 'json') return printJSON(v);
      process.stdout.write(
        ['strata:', ` Version:           ${v.Version}`, ` API version:       ${v.ApiVersion} (minimum version ${v.MinAPIVersion})`, ` Node version:      ${v.NodeVersion}`, ` OS/Arch:           ${v.Os}/${v.Arch}`].join('\n') + '\n',
      );
    });
}
