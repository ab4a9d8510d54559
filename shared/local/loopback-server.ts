// The local stand-in for the config bucket and the worker queue: a loopback
// HTTP server (127.0.0.1, a free port) that serves the worker bundle through
// URLs signed with HMAC and an expiry, and hands each job to its worker
// behind a bearer credential. Everything granted is recorded per (run, VM), so
// revoke makes the bundle URL and the job's credentials answer 403 from then
// on, as revoking a presigned URL's role or a SAS's stored policy does.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import type { Clock } from '../core/clock.js';
import type { JobProgress, JobStatus, WorkerJob } from '../ports/cloud.js';
import { NotFoundError } from '../core/errors.js';

interface Grant {
  id: string;
  runId: string;
  vmId: string;
  kind: 'bundle-url' | 'job-credential';
  expiresAt: number;
  revoked: boolean;
}

interface JobEntry {
  job: WorkerJob;
  runId: string;
  vmId: string;
  grantId: string;
  tokenHash: Buffer;
  status: JobStatus;
  /** Last time the worker said anything (ms). */
  heardAt: number;
}

export interface LoopbackServer {
  readonly baseUrl: string;
  /** Serves `path` under `name`. */
  stageFile(name: string, path: string): void;
  /** A URL to the staged file, valid for `ttlSeconds` and until the (run, VM) is revoked. */
  signUrl(name: string, scope: { runId: string; vmId: string }, ttlSeconds: number): string;
  /** Hands a job over: returns the URL the worker fetches it from and the bearer token for it. Idempotent per jobId. */
  offerJob(job: WorkerJob, scope: { runId: string; vmId: string }, ttlSeconds: number): { url: string; token: string };
  /** The job's status, and when the worker last reported. */
  jobStatus(jobId: string): { status: JobStatus; heardAt: number };
  /** Ends every grant of the (run, VM); returns their descriptions. Idempotent. */
  revoke(scope: { runId: string; vmId: string }): string[];
  /** Called on every progress or result a worker posts. */
  onReport?: (jobId: string, status: JobStatus) => void;
  close(): Promise<void>;
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

export async function startLoopbackServer(opts: { clock: Clock; secret?: Buffer }): Promise<LoopbackServer> {
  const secret = opts.secret ?? randomBytes(32);
  const files = new Map<string, string>();
  const grants = new Map<string, Grant>();
  const jobs = new Map<string, JobEntry>();
  const now = () => opts.clock.now().getTime();

  const sign = (name: string, grantId: string, exp: number) => createHmac('sha256', secret).update(`${name}\n${grantId}\n${exp}`).digest('hex');

  const grantValid = (g: Grant | undefined): string | undefined => {
    if (!g) return 'unknown grant';
    if (g.revoked) return 'access was revoked';
    if (now() > g.expiresAt) return 'expired';
    return undefined;
  };

  const deny = (res: ServerResponse, why: string) => {
    res.writeHead(403, { 'content-type': 'text/plain' });
    res.end(`403 Forbidden: ${why}\n`);
  };

  const readBody = async (req: IncomingMessage): Promise<unknown> => {
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of req) {
      n += (c as Buffer).length;
      if (n > 1024 * 1024) throw new Error('body too large');
      chunks.push(c as Buffer);
    }
    return JSON.parse(Buffer.concat(chunks).toString('utf8') || 'null');
  };

  const authJob = (req: IncomingMessage, jobId: string): JobEntry | string => {
    const entry = jobs.get(jobId);
    if (!entry) return 'unknown job';
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    if (!m) return 'no credential';
    const given = sha256(m[1]!);
    if (!timingSafeEqual(given, entry.tokenHash)) return 'wrong credential';
    const why = grantValid(grants.get(entry.grantId));
    return why ?? entry;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    if (req.method === 'GET' && parts[0] === 'files' && parts.length === 2) {
      const name = parts[1]!;
      const g = url.searchParams.get('g') ?? '';
      const exp = Number(url.searchParams.get('exp'));
      const sig = url.searchParams.get('sig') ?? '';
      const expected = sign(name, g, exp);
      if (sig.length !== expected.length || !timingSafeEqual(Buffer.from(sig), Buffer.from(expected))) return deny(res, 'bad signature');
      if (!Number.isFinite(exp) || now() > exp * 1000) return deny(res, 'expired');
      const why = grantValid(grants.get(g));
      if (why) return deny(res, why);
      const path = files.get(name);
      if (!path) {
        res.writeHead(404).end('not found\n');
        return;
      }
      const st = await stat(path);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': st.size });
      createReadStream(path).pipe(res);
      return;
    }
    if (parts[0] === 'jobs' && parts[1]) {
      const entry = authJob(req, parts[1]);
      if (typeof entry === 'string') return deny(res, entry);
      if (req.method === 'GET' && parts.length === 2) {
        entry.heardAt = now();
        if (entry.status.state === 'queued') entry.status = { state: 'running', updatedAt: new Date(now()).toISOString() };
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(entry.job));
        return;
      }
      if (req.method === 'POST' && parts[2] === 'progress') {
        const p = (await readBody(req)) as JobProgress;
        entry.heardAt = now();
        if (entry.status.state === 'queued' || entry.status.state === 'running') {
          entry.status = { state: 'running', progress: p, updatedAt: new Date(now()).toISOString() };
          server.onReport?.(entry.job.jobId, entry.status);
        }
        res.writeHead(204).end();
        return;
      }
      if (req.method === 'POST' && parts[2] === 'result') {
        const body = (await readBody(req)) as JobStatus;
        entry.heardAt = now();
        if (body && (body.state === 'succeeded' || body.state === 'failed')) {
          // The first result is final: a late "failed" must never overwrite a success.
          if (entry.status.state !== 'succeeded' && entry.status.state !== 'failed') {
            entry.status = { ...body, updatedAt: new Date(now()).toISOString() } as JobStatus;
            server.onReport?.(entry.job.jobId, entry.status);
          }
          res.writeHead(204).end();
        } else res.writeHead(400).end('result must be { state: succeeded | failed }\n');
        return;
      }
    }
    res.writeHead(404).end('not found\n');
  };

  const http: Server = createServer((req, res) => {
    handle(req, res).catch((e) => {
      if (!res.headersSent) res.writeHead(500);
      res.end(String((e as Error).message));
    });
  });
  await new Promise<void>((resolve, reject) => {
    http.once('error', reject);
    http.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (http.address() as AddressInfo).port;
  const baseUrl = `http://127.0.0.1:${port}`;

  const newGrant = (scope: { runId: string; vmId: string }, kind: Grant['kind'], ttlSeconds: number): Grant => {
    const g: Grant = { id: randomBytes(12).toString('hex'), ...scope, kind, expiresAt: now() + ttlSeconds * 1000, revoked: false };
    grants.set(g.id, g);
    return g;
  };

  const server: LoopbackServer = {
    baseUrl,
    stageFile(name, path) {
      files.set(name, path);
    },
    signUrl(name, scope, ttlSeconds) {
      const g = newGrant(scope, 'bundle-url', ttlSeconds);
      const exp = Math.floor(g.expiresAt / 1000);
      return `${baseUrl}/files/${encodeURIComponent(name)}?g=${g.id}&exp=${exp}&sig=${sign(name, g.id, exp)}`;
    },
    offerJob(job, scope, ttlSeconds) {
      const token = randomBytes(32).toString('base64url');
      const existing = jobs.get(job.jobId);
      if (existing) {
        // Same job handed over again (a re-invoked step): new credential, same status.
        const g = grants.get(existing.grantId)!;
        if (g.revoked) throw new NotFoundError(`job ${job.jobId} was revoked; start a new run`);
        existing.tokenHash = sha256(token);
        return { url: `${baseUrl}/jobs/${encodeURIComponent(job.jobId)}`, token };
      }
      const g = newGrant(scope, 'job-credential', ttlSeconds);
      jobs.set(job.jobId, { job, ...scope, grantId: g.id, tokenHash: sha256(token), status: { state: 'queued', updatedAt: new Date(now()).toISOString() }, heardAt: now() });
      return { url: `${baseUrl}/jobs/${encodeURIComponent(job.jobId)}`, token };
    },
    jobStatus(jobId) {
      const e = jobs.get(jobId);
      if (!e) throw new NotFoundError(`job ${jobId} is unknown here — it was never started on this machine, or the runner restarted`);
      return { status: e.status, heardAt: e.heardAt };
    },
    revoke(scope) {
      const out: string[] = [];
      for (const g of grants.values()) {
        if (g.runId === scope.runId && g.vmId === scope.vmId && !g.revoked) {
          g.revoked = true;
          out.push(`${g.kind} ${g.id}`);
        }
      }
      return out;
    },
    close: () =>
      new Promise<void>((resolve) => {
        http.closeAllConnections?.();
        http.close(() => resolve());
      }),
  };
  return server;
}
