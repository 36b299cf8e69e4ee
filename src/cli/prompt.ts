import { invalidArgument } from '../errors.js';

/** What the terminal sent beyond the line last returned (a paste of both answers at once). */
let typedAhead = '';

/**
 * One line typed at the terminal, after `question`: echoed, or not at all for a password (docker login's
 * interactive prompts). The terminal is in raw mode only while the line is read.
 */
export async function promptLine(question: string, hidden: boolean): Promise<string> {
  const input = process.stdin;
  if (!input.isTTY) throw invalidArgument('Cannot perform an interactive login from a non TTY device');
  process.stdout.write(question);
  input.setRawMode(true);
  input.resume();
  try {
    let line = '';
    for (;;) {
      const chunk = typedAhead !== '' ? typedAhead : await nextChunk(input);
      typedAhead = '';
      for (let i = 0; i < chunk.length; i++) {
        const c = chunk[i]!;
        if (c === '\r' || c === '\n') {
          typedAhead = chunk.slice(c === '\r' && chunk[i + 1] === '\n' ? i + 2 : i + 1);
          process.stdout.write('\n');
          return line;
        }
        if (c === '\x03') throw invalidArgument('login interrupted');
        if (c === '\x04' && line === '') throw invalidArgument('login: no input (end of file at the prompt)');
        if (c === '\x7f' || c === '\b') {
          if (line !== '' && !hidden) process.stdout.write('\b \b');
          line = line.slice(0, -1);
        } else if (c >= ' ') {
          line += c;
          if (!hidden) process.stdout.write(c);
        }
      }
    }
  } finally {
    input.setRawMode(false);
    input.pause();
  }
}

function nextChunk(input: NodeJS.ReadStream): Promise<string> {
  return new Promise((resolve, reject) => {
    const done = () => {
      input.off('data', onData);
      input.off('end', onEnd);
    };
    const onData = (b: Buffer) => {
      done();
      resolve(b.toString('utf8'));
    };
    const onEnd = () => {
      done();
      reject(invalidArgument('login: the terminal closed at the prompt'));
    };
    input.on('data', onData);
    input.on('end', onEnd);
  });
}
