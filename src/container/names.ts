import { randomInt } from 'node:crypto';
import { invalidArgument } from '../errors.js';

// Random names the way docker makes them: adjective_surname (a short list of our own).
const LEFT = ['admiring', 'brave', 'calm', 'clever', 'eager', 'focused', 'gallant', 'happy', 'jolly', 'keen', 'lucid', 'modest', 'nifty', 'quirky', 'serene', 'stoic', 'tender', 'vibrant', 'wizardly', 'zealous'];
const RIGHT = ['babbage', 'curie', 'darwin', 'euler', 'fermi', 'galois', 'hopper', 'hypatia', 'kepler', 'lamarr', 'lovelace', 'noether', 'pascal', 'ritchie', 'shannon', 'thompson', 'turing', 'wozniak', 'yalow', 'zuse'];

/** A random name `taken` says is free; like docker, a digit is appended when the plain names run short. */
export function randomName(taken: (name: string) => boolean): string {
  for (let attempt = 0; ; attempt++) {
    let name = `${LEFT[randomInt(LEFT.length)]}_${RIGHT[randomInt(RIGHT.length)]}`;
    for (let d = 0; d < Math.floor(attempt / 10); d++) name += String(randomInt(10));
    if (!taken(name)) return name;
  }
}

const NAME_RE = /^\/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;

/** Docker's container name rule; returns the name without the leading `/`. */
export function validateName(name: string): string {
  if (!NAME_RE.test(name)) throw invalidArgument(`Invalid container name (${name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed`);
  return name.replace(/^\//, '');
}
