// Starts Azurite (Microsoft's Azure Storage emulator) as a child process on
// free loopback ports, in memory, for integration tests. Use:
//   const az = await startAzurite(); ... await az.stop();
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { createServer } from 'node:net';

export const AZURITE_ACCOUNT = 'devstoreaccount1';
// The emulator's published well-known development key (not a secret).
export const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

export interface Azurite {
  blobUrl: string;
  queueUrl: string;
  account: string;
  accountKey: string;
  connectionString: string;
  stop(): Promise<void>;
}

/** `n` distinct free loopback ports: every listener stays open until all are chosen, so none repeats. */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from({ length: n }, () => new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
      const srv = createServer();
      srv.once('error', reject);
      srv.listen(0, '127.0.0.1', () => resolve(srv));
    })),
  );
  const ports = servers.map((srv) => (srv.address() as { port: number }).port);
  await Promise.all(servers.map((srv) => new Promise((r) => srv.close(r))));
  return ports;
}

export async function startAzurite(): Promise<Azurite> {
  // Another process may take a chosen port before Azurite listens on it: then it starts again on others.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startAzuriteOnce();
    } catch (e) {
      if (attempt >= 3 || !/EADDRINUSE/.test(String((e as Error).message))) throw e;
    }
  }
}

async function startAzuriteOnce(): Promise<Azurite> {
  const require = createRequire(import.meta.url);
  const pkgDir = dirname(require.resolve('azurite/package.json'));
  const bin = join(pkgDir, 'dist', 'src', 'azurite.js');
  const [blobPort, queuePort, tablePort] = (await freePorts(3)) as [number, number, number];
  const child: ChildProcess = spawn(
    process.execPath,
    [bin, '--inMemoryPersistence', '--skipApiVersionCheck', '--silent', '--loose', '--blobHost', '127.0.0.1', '--blobPort', String(blobPort), '--queueHost', '127.0.0.1', '--queuePort', String(queuePort), '--tableHost', '127.0.0.1', '--tablePort', String(tablePort)],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout?.on('data', (d) => (output += d));
  child.stderr?.on('data', (d) => (output += d));
  const blobUrl = `http://127.0.0.1:${blobPort}/${AZURITE_ACCOUNT}`;
  const queueUrl = `http://127.0.0.1:${queuePort}/${AZURITE_ACCOUNT}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`Azurite exited (${child.exitCode}): ${output}`);
    try {
      const res = await fetch(`http://127.0.0.1:${blobPort}/${AZURITE_ACCOUNT}?comp=list`);
      await res.arrayBuffer();
      const q = await fetch(`http://127.0.0.1:${queuePort}/${AZURITE_ACCOUNT}?comp=list`);
      await q.arrayBuffer();
      break;
    } catch {
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`Azurite did not start within 20 s: ${output}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    blobUrl,
    queueUrl,
    account: AZURITE_ACCOUNT,
    accountKey: AZURITE_KEY,
    connectionString: `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};BlobEndpoint=${blobUrl};QueueEndpoint=${queueUrl};`,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
        setTimeout(() => child.kill('SIGKILL'), 3000).unref();
      }),
  };
}
