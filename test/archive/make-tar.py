# Build a PAX tar from a JSON list of entries on stdin (python's tarfile: an independent tar writer for tests).
import io, json, sys, tarfile
types = {'file': tarfile.REGTYPE, 'dir': tarfile.DIRTYPE, 'symlink': tarfile.SYMTYPE, 'hardlink': tarfile.LNKTYPE,
         'char': tarfile.CHRTYPE, 'block': tarfile.BLKTYPE, 'fifo': tarfile.FIFOTYPE}
out = tarfile.open(fileobj=sys.stdout.buffer, mode='w|', format=tarfile.PAX_FORMAT)
for e in json.load(sys.stdin):
    ti = tarfile.TarInfo(e['name'])
    ti.type = types[e.get('type', 'file')]
    ti.mode = e.get('mode', 0o755 if ti.type == tarfile.DIRTYPE else 0o644)
    ti.uid, ti.gid = e.get('uid', 0), e.get('gid', 0)
    ti.mtime = e.get('mtime', 1700000000)
    ti.linkname = e.get('linkname', '')
    ti.devmajor, ti.devminor = e.get('devmajor', 0), e.get('devminor', 0)
    ti.pax_headers = {'SCHILY.xattr.' + k: v for k, v in e.get('xattrs', {}).items()}
    data = e.get('data', '').encode()
    ti.size = len(data) if ti.type == tarfile.REGTYPE else 0
    out.addfile(ti, io.BytesIO(data) if ti.size else None)
out.close()
