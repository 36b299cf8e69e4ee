import { Command, CommanderError } from 'commander';
import { Engine } from '../engine.js';
import { exitCodeOf, StrataError } from '../errors.js';
import { registerImageCommands } from './image-commands.js';
import { registerContainerCommands } from './container-commands.js';
import { registerSystemCommands } from './system-commands.js';
import { registerRegistryCommands } from './registry-commands.js';
import { registerVolumeCommands } from './volume-commands.js';

/** How a command reaches the engine: opened lazily, with the global flags, by the commands that need one. */
export interface CliContext {
  engine(): Promise<Engine>;
}

const collect = (v: string, prev: string[]) => [...prev, v];

export async function main(argv: string[]): Promise<number> {
  const program = new Command('strata');
  program
    .description('A container storage engine: Docker images, layers, copy-on-write containers and storage drivers')
    .option('--data-root <dir>', 'root of persisted state (default /var/lib/strata as root, ~/.local/share/strata otherwise; env STRATA_DATA_ROOT)')
    .option('-s, --storage-driver <name>', 'storage driver to use (overlay2, vfs, ...)')
    .option('--storage-opt <key=value>', 'storage driver option (repeatable)', collect, [])
    .option('--config-file <file>', 'daemon.json-style configuration file')
    .enablePositionalOptions()
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  let opened: Engine | undefined;
  const ctx: CliContext = {
    async engine() {
      if (opened) return opened;
      const g = program.opts<{ dataRoot?: string; storageDriver?: string; storageOpt: string[]; configFile?: string }>();
      opened = await Engine.open({
        dataRoot: g.dataRoot,
        storageDriver: g.storageDriver,
        storageOpts: g.storageOpt.length > 0 ? g.storageOpt : undefined,
        configFile: g.configFile,
      });
      return opened;
    },
  };
  registerImageCommands(program, ctx);
  registerContainerCommands(program, ctx);
  registerSystemCommands(program, ctx);
  registerRegistryCommands(program, ctx);
  registerVolumeCommands(program, ctx);

  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    const msg = e instanceof StrataError ? e.message : e instanceof Error ? e.message : String(e);
    process.stderr.write(`Error: ${msg.split('\n')[0]}\n`);
    if (process.env.STRATA_DEBUG && e instanceof Error) process.stderr.write(`${e.stack}\n`);
    return exitCodeOf(e);
  }
  // No engine.close(): mounts made by `strata mount` outlive this process, by design.
}
