// Local workers: each a separate child process (shared/local/worker-host.mjs,
// run on bare node) with its own working folder .tender/workers/<id>. The
// IPC channel plays the cloud's run-command service; the loopback server
// plays the config bucket (bundle behind a signed URL) and the worker queue
// (job behind a bearer credential). Implements Workers, WorkerChannel and
// Access, which share the worker handles and the grants.

import { fork, type ChildProcess } from 'node:child_process';
import { mkdir, open, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Access, JobStatus, WorkerChannel, WorkerJob, WorkerRef, Workers, WorkerState, DeployWorkerRequest } from '../ports/cloud.js';
import type { Clock } from '../core/clock.js';
import type { Logger } from '../core/logger.js';
import { AccessDeniedError, BundleIntegrityError, TransientError, WorkerFailedError } from '../core/errors.js';
import type { LoopbackServer } from './loopback-server.js';
import { ensureWorkerBundle, PROJECT_ROOT, type WorkerBundle } from './worker-bundle.js';

const HOST = fileURLToPath(new URL('./worker-host.mjs', import.meta.url));

export interface LocalWorkersOptions {
  workDir: string;
  server: LoopbackServer;
  clock: Clock;
  logger: Logger;
  /** The bundle to install (default: worker/agent.ts built and cached under <workDir>/bundles). */
  bundle?: () => Promise<WorkerBundle>;
  /** The sha256 the worker is told to expect (default: the bundle's). Tests use it to show a mismatch is refused. */
  expectedSha256?: (bundle: WorkerBundle) => string;
  bundleUrlTtlSeconds?: number;
  jobCredentialTtlSeconds?: number;
  /** A running job silent for longer than this has failed. */
  heartbeatTimeoutMs?: number;
  installTimeoutMs?: number;
}

interface Handle {
  id: string;
  runId: string;
  vmId: string;
  dir: string;
  child: ChildProcess;
  state: WorkerState;
  installed?: string;
  exited?: string;
  jobs: Set<string>;
  jobErrors: Map<string, string>;
  replies: Map<number, (m: any) => void>;
}

export function workerIdOf(runId: string, vmId: string): string {
  return `w-${runId}-${vmId}`.replace(/[^A-Za-z0-9_.-]/g, '-');
}

/** Whether a process with this pid is still running. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export type LocalWorkers = Workers &
  WorkerChannel &
  Access & {
    /** Pid of the worker's process while it runs. */
    pidOf(workerId: string): number | undefined;
    folderOf(workerId: string): string;
    /** Every worker this instance started, with its pid (for checks that none is left). */
    started(): Array<{ workerId: string; pid?: number; running: boolean }>;
    /** Kills every worker this instance started that is still running. */
    close(): Promise<void>;
  };

export function createLocalWorkers(opts: LocalWorkersOptions): LocalWorkers {
  const root = join(opts.workDir, 'workers');
  const logs = join(opts.workDir, 'logs');
  const handles = new Map<string, Handle>();
  const getBundle = opts.bundle ?? (() => ensureWorkerBundle({ cacheDir: join(opts.workDir, 'bundles') }));
  let reqSeq = 0;

  const handleOf = (ref: WorkerRef): Handle => {
    const h = handles.get(ref.workerId);
    if (!h || h.state === 'gone') throw new WorkerFailedError(`worker ${ref.workerId} is not running on this machine — it was deallocated or its runner restarted; run the backup again`);
    return h;
  };

  const ask = (h: Handle, msg: Record<string, unknown>, timeoutMs: number): Promise<any> =>
    new Promise((resolve, reject) => {
      if (h.exited) return reject(new WorkerFailedError(`worker ${h.id} exited (${h.exited}) — see ${join(logs, h.id + '.log')}`));
      const reqId = ++reqSeq;
      const timer = setTimeout(() => {
        h.replies.delete(reqId);
        reject(new WorkerFailedError(`worker ${h.id} did not answer "${String(msg.type)}" within ${timeoutMs / 1000}s — see ${join(logs, h.id + '.log')}`));
      }, timeoutMs);
      h.replies.set(reqId, (m) => {
        clearTimeout(timer);
        h.replies.delete(reqId);
        resolve(m);
      });
      h.child.send({ ...msg, reqId });
    });

  async function kill(h: Handle): Promise<void> {
    if (h.exited) return;
    const gone = new Promise<void>((resolve) => h.child.once('exit', () => resolve()));
    h.child.kill('SIGKILL');
    await gone;
  }

  const workers: LocalWorkers = {
    async deployWorker(req: DeployWorkerRequest): Promise<WorkerRef> {
      const id = workerIdOf(req.runId, req.vm.vmId);
      const existing = handles.get(id);
      if (existing && existing.state !== 'gone' && !existing.exited) return { workerId: id, region: 'local' };
      const dir = join(root, id);
      await mkdir(dir, { recursive: true });
      await mkdir(logs, { recursive: true });
      const log = await open(join(logs, `${id}.log`), 'a');
      let child: ChildProcess;
      try {
        child = fork(HOST, [], {
          cwd: dir,
          execArgv: [],
          stdio: ['ignore', log.fd, log.fd, 'ipc'],
          env: {
            ...process.env,
            // zstd-napi is native and not in the bundle: resolved from the project.
            NODE_PATH: join(PROJECT_ROOT, 'node_modules'),
            TENDER_WORKER_ID: id,
          },
        });
      } finally {
        await log.close();
      }
      const h: Handle = { id, runId: req.runId, vmId: req.vm.vmId, dir, child, state: 'starting', jobs: new Set(), jobErrors: new Map(), replies: new Map() };
      handles.set(id, h);
      child.on('message', (m: any) => {
        if (m?.type === 'ready') h.state = 'ready';
        else if (m?.type === 'job-error') h.jobErrors.set(m.jobId, m.message);
        if (typeof m?.reqId === 'number') h.replies.get(m.reqId)?.(m);
      });
      child.on('exit', (code, signal) => {
        h.exited = signal ? `signal ${signal}` : `code ${code}`;
        if (h.state !== 'gone') h.state = 'failed';
        for (const r of h.replies.values()) r({ type: 'exited' });
      });
      child.on('error', (e) => {
        h.exited ??= e.message;
        if (h.state !== 'gone') h.state = 'failed';
      });
      await writeFile(
        join(dir, 'worker.json'),
        JSON.stringify({ workerId: id, runId: req.runId, vmId: req.vm.vmId, pid: child.pid, profile: req.profile, privateNetwork: req.privateNetwork, tags: req.tags, createdAt: opts.clock.now().toISOString() }, null, 2),
      );
      opts.logger.debug('worker process started', { workerId: id, pid: child.pid });
      return { workerId: id, region: 'local' };
    },

    async getWorkerState(ref: WorkerRef): Promise<WorkerState> {
      const h = handles.get(ref.workerId);
      if (h) return h.state;
      // Made by another runner process: we cannot talk to it, so it cannot serve this run.
      return existsSync(join(root, ref.workerId)) ? 'failed' : 'gone';
    },

    async installWorker(req): Promise<{ bundleSha256: string }> {
      const h = handleOf(req.worker);
      if (h.installed) return { bundleSha256: h.installed };
      const bundle = await getBundle();
      const expected = opts.expectedSha256?.(bundle) ?? bundle.sha256;
      const name = `worker-agent-${bundle.sha256.slice(0, 16)}.cjs`;
      opts.server.stageFile(name, bundle.path);
      const url = opts.server.signUrl(name, { runId: req.runId, vmId: req.vmId }, opts.bundleUrlTtlSeconds ?? 600);
      const reply = await ask(h, { type: 'install', url, sha256: expected }, opts.installTimeoutMs ?? 120_000);
      if (reply.type === 'installed') {
        h.installed = reply.sha256;
        return { bundleSha256: reply.sha256 };
      }
      if (reply.type === 'exited') throw new WorkerFailedError(`worker ${h.id} exited while installing (${h.exited}) — see ${join(logs, h.id + '.log')}`);
      if (reply.kind === 'integrity') {
        throw new BundleIntegrityError(`worker ${h.id} refused the bundle: its sha256 is ${reply.got}, expected ${reply.expected}; it was not run — the staged bundle changed after its digest was taken; run again to restage it`);
      }
      if (reply.kind === 'http' && reply.status === 403) throw new AccessDeniedError(`worker ${h.id} could not download its bundle: ${reply.message} — the signed URL expired or was revoked; run again`);
      if (reply.kind === 'network') throw new TransientError(`worker ${h.id} could not reach the bundle server: ${reply.message}`);
      throw new WorkerFailedError(`worker ${h.id} could not install its bundle (${reply.kind}${reply.status ? ' ' + reply.status : ''}): ${reply.message}`);
    },

    async deallocateWorker(req): Promise<void> {
      const id = req.worker?.workerId ?? workerIdOf(req.runId, req.vmId);
      const h = handles.get(id);
      const dir = join(root, id);
      if (h) {
        await kill(h);
        h.state = 'gone';
      } else {
        // A worker left by an earlier runner: stop it by the pid it recorded, if that is still our host.
        try {
          const rec = JSON.parse(await readFile(join(dir, 'worker.json'), 'utf8')) as { pid?: number };
          if (rec.pid && alive(rec.pid)) {
            const cmd = await readFile(`/proc/${rec.pid}/cmdline`, 'utf8').catch(() => '');
            if (cmd.includes('worker-host.mjs')) process.kill(rec.pid, 'SIGKILL');
          }
        } catch {
          // no record: nothing to stop
        }
      }
      await rm(dir, { recursive: true, force: true });
    },

    async startJob(ref: WorkerRef, job: WorkerJob): Promise<void> {
      const h = handleOf(ref);
      if (h.jobs.has(job.jobId)) return;
      if (!h.installed) throw new WorkerFailedError(`worker ${h.id} has no worker software installed — installWorker must run first`);
      const { url, token } = opts.server.offerJob(job, { runId: job.runId, vmId: job.vm.vmId }, opts.jobCredentialTtlSeconds ?? 24 * 3600);
      h.jobs.add(job.jobId);
      h.child.send({ type: 'job', jobId: job.jobId, url, token });
    },

    async getJobStatus(ref: WorkerRef, jobId: string): Promise<JobStatus> {
      const h = handles.get(ref.workerId);
      const { status, heardAt } = opts.server.jobStatus(jobId);
      if (status.state === 'succeeded' || status.state === 'failed') return status;
      const failed = (message: string): JobStatus => ({ state: 'failed', error: { name: WorkerFailedError.name, message }, updatedAt: opts.clock.now().toISOString() });
      const jobError = h?.jobErrors.get(jobId);
      if (jobError) return failed(`the worker could not run the job: ${jobError}`);
      if (!h || h.exited) return failed(`worker ${ref.workerId} stopped (${h?.exited ?? 'not running here'}) before reporting a result`);
      const silentMs = opts.clock.now().getTime() - heardAt;
      if (silentMs > (opts.heartbeatTimeoutMs ?? 120_000)) return failed(`worker ${ref.workerId} has not reported for ${Math.round(silentMs / 1000)}s`);
      return status;
    },

    async revokeAccess(req): Promise<{ revoked: string[] }> {
      return { revoked: opts.server.revoke(req) };
    },

    pidOf(workerId) {
      const h = handles.get(workerId);
      return h && !h.exited ? h.child.pid : undefined;
    },
    folderOf(workerId) {
      return join(root, workerId);
    },
    started() {
      return [...handles.values()].map((h) => ({ workerId: h.id, pid: h.child.pid, running: !h.exited }));
    },
    async close() {
      await Promise.all([...handles.values()].map((h) => kill(h)));
    },
  };
  return workers;
}
