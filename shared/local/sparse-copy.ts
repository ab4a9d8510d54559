// A point-in-time copy of a disk image: a reflink where the filesystem can
// (btrfs, XFS: instant, shares blocks), otherwise a copy that keeps holes so a
// mostly empty 1 GiB image does not become 1 GiB on disk.

import { spawn } from 'node:child_process';
import { open, rm } from 'node:fs/promises';

function runCp(src: string, dst: string): Promise<boolean> {
  return new Promise((resolve) => {
    const p = spawn('cp', ['--reflink=auto', '--sparse=always', src, dst], { stdio: 'ignore' });
    p.on('error', () => resolve(false));
    p.on('exit', (code) => resolve(code === 0));
  });
}

/** Copies block by block, seeking over all-zero blocks so they stay holes. */
async function copyKeepingHoles(src: string, dst: string, chunk = 1024 * 1024): Promise<void> {
  const inp = await open(src, 'r');
  const out = await open(dst, 'w');
  try {
    const size = (await inp.stat()).size;
    const buf = Buffer.allocUnsafe(chunk);
    const zero = Buffer.alloc(chunk);
    for (let pos = 0; pos < size; pos += chunk) {
      const { bytesRead } = await inp.read(buf, 0, Math.min(chunk, size - pos), pos);
      const part = buf.subarray(0, bytesRead);
      if (!part.equals(zero.subarray(0, bytesRead))) await out.write(part, 0, bytesRead, pos);
    }
    await out.truncate(size);
    await out.sync();
  } finally {
    await inp.close();
    await out.close();
  }
}

export async function pointInTimeCopy(src: string, dst: string): Promise<void> {
  if (process.platform !== 'win32' && (await runCp(src, dst))) return;
  await rm(dst, { force: true });
  await copyKeepingHoles(src, dst);
}
