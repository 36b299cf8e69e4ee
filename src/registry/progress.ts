import { humanSize } from '../util/human-size.js';

/** One progress message, shaped like the Docker Engine API's JSON messages (what `docker pull` renders). */
export interface ProgressEvent {
  /** The layer (12 hex digits) or the tag a line is about; absent for the closing `Digest:`/`Status:` lines. */
  id?: string;
  status: string;
  progressDetail?: { current: number; total?: number };
  /** The rendered bar, e.g. `[=====>      ]  1.2MB/3.4MB`. */
  progress?: string;
}

const BAR_WIDTH = 50;

/** Docker's progress bar: 50 columns of `=` with a `>` head, then `current/total` in human sizes. */
export function progressBar(current: number, total?: number): string {
  if (total === undefined || total <= 0) return humanSize(current);
  const filled = Math.min(BAR_WIDTH, Math.floor((current / total) * BAR_WIDTH));
  const bar = filled >= BAR_WIDTH ? '='.repeat(BAR_WIDTH) : '='.repeat(filled) + '>' + ' '.repeat(BAR_WIDTH - filled - 1);
  return `[${bar}] ${humanSize(current).padStart(8)}/${humanSize(total)}`;
}

/** A progress event for a byte count (bar included). */
export function byteProgress(id: string, status: string, current: number, total?: number): ProgressEvent {
  return { id, status, progressDetail: total === undefined ? { current } : { current, total }, progress: progressBar(current, total) };
}

/**
 * Draws progress events as `docker pull` does: on a terminal one line per id, redrawn in place (cursor moves up
 * to the id's line); elsewhere plain lines, one per change of status (byte counts are not repeated).
 */
export class ProgressRenderer {
  private readonly ids: string[] = [];
  private readonly lastStatus = new Map<string, string>();

  constructor(
    private readonly out: NodeJS.WritableStream & { isTTY?: boolean },
    private readonly tty = out.isTTY === true,
  ) {}

  write(e: ProgressEvent): void {
    const text = e.id ? `${e.id}: ${e.status}${e.progress ? ` ${e.progress}` : ''}` : e.status;
    if (!e.id) {
      this.out.write(`${text}\n`);
      return;
    }
    if (!this.tty) {
      if (this.lastStatus.get(e.id) === e.status) return;
      this.lastStatus.set(e.id, e.status);
      this.out.write(`${text}\n`);
      return;
    }
    let index = this.ids.indexOf(e.id);
    if (index < 0) {
      this.ids.push(e.id);
      this.out.write(`${text}\n`);
      return;
    }
    const up = this.ids.length - index;
    // Up to the id's line, clear it, write, and back down below the last line.
    this.out.write(`\x1b[${up}A\r\x1b[2K${text}\r\x1b[${up}B`);
  }
}
