/** The entry kinds a layer tar can hold (GNU/PAX extension headers are folded into the entry they describe). */
export type EntryType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'directory' | 'fifo';

export interface TarTime {
  sec: number;
  nsec: number;
}

/** One tar entry's metadata, after PAX and GNU extensions were applied. */
export interface TarHeader {
  /** Path as stored, PAX `path` / GNU long name applied; no normalisation (callers clean it). */
  name: string;
  type: EntryType;
  /** Permission bits with setuid/setgid/sticky: mode & 0o7777. */
  mode: number;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  /** Body length in bytes (0 for everything but 'file'). */
  size: number;
  mtime: TarTime;
  atime?: TarTime;
  ctime?: TarTime;
  /** Target of a symlink or hardlink (PAX `linkpath` / GNU long link applied). */
  linkname: string;
  devmajor: number;
  devminor: number;
  /** `SCHILY.xattr.<name>` records, values byte-exact. */
  xattrs: Map<string, Buffer>;
  /** Every other PAX record not folded into the fields above, values byte-exact. */
  pax: Map<string, Buffer>;
}
