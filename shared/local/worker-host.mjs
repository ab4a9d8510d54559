// The local worker's "machine image": what runs in the child process before
// the worker software is installed, like the OS and run-command agent of a
// cloud worker. It takes commands from its parent over the IPC channel (the
// local Run Command): install = download the bundle from a signed URL, check
// its sha256 and only then load it; job = hand a job URL and credential to the
// loaded agent. Plain JavaScript on purpose: it runs on bare `node`.

import { createHash } from 'node:crypto';
import { writeFile, rename } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';

const require = createRequire(import.meta.url);
let agent;
let installedSha;

const send = (m) => {
  if (process.connected) process.send(m);
};

async function install(m) {
  if (agent && installedSha === m.sha256) return send({ type: 'installed', sha256: installedSha, reqId: m.reqId });
  let res;
  try {
    res = await fetch(m.url);
  } catch (e) {
    return send({ type: 'install-failed', kind: 'network', message: String(e?.message ?? e), reqId: m.reqId });
  }
  if (!res.ok) {
    const text = (await res.text().catch(() => '')).trim();
    return send({ type: 'install-failed', kind: 'http', status: res.status, message: text, reqId: m.reqId });
  }
  const bytes = Buffer.from(await res.arrayBuffer());
  const got = createHash('sha256').update(bytes).digest('hex');
  if (got !== m.sha256) {
    // Never written to disk, never run.
    return send({ type: 'install-failed', kind: 'integrity', expected: m.sha256, got, reqId: m.reqId });
  }
  const path = join(process.cwd(), 'bundle.cjs');
  await writeFile(`${path}.tmp`, bytes);
  await rename(`${path}.tmp`, path);
  try {
    agent = require(path);
  } catch (e) {
    return send({ type: 'install-failed', kind: 'load', message: String(e?.stack ?? e), reqId: m.reqId });
  }
  if (typeof agent.runJob !== 'function') return send({ type: 'install-failed', kind: 'load', message: 'bundle exports no runJob', reqId: m.reqId });
  installedSha = got;
  send({ type: 'installed', sha256: got, reqId: m.reqId });
}

process.on('message', (m) => {
  if (m?.type === 'install') {
    install(m).catch((e) => send({ type: 'install-failed', kind: 'load', message: String(e?.stack ?? e), reqId: m.reqId }));
  } else if (m?.type === 'job') {
    if (!agent) return send({ type: 'job-error', jobId: m.jobId, message: 'no worker software installed' });
    agent
      .runJob({ jobUrl: m.url, token: m.token })
      .then(() => send({ type: 'job-ended', jobId: m.jobId }))
      .catch((e) => {
        process.stderr.write(`job ${m.jobId} failed: ${e?.stack ?? e}\n`);
        send({ type: 'job-error', jobId: m.jobId, message: String(e?.message ?? e) });
      });
  }
});

// An orphaned worker must not outlive the pipeline that made it.
process.on('disconnect', () => process.exit(0));
send({ type: 'ready', pid: process.pid });
