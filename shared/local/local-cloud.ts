// The local embedded default: every port the pipeline needs, doing the real
// work on this machine. close() stops the loopback server and any worker
// process still running.

import { join } from 'node:path';
import type { CloudPorts } from '../ports/cloud.js';
import type { RestorePoints } from '../ports/restore-points.js';
import type { LocalVm } from '../core/config.js';
import type { Clock } from '../core/clock.js';
import { systemClock } from '../core/clock.js';
import type { Logger } from '../core/logger.js';
import { silentLogger } from '../core/logger.js';
import { createLocalSnapshots } from './snapshots.js';
import { createLocalCatalog } from './catalog.js';
import { createLocalWorkers, type LocalWorkers, type LocalWorkersOptions } from './workers.js';
import { startLoopbackServer, type LoopbackServer } from './loopback-server.js';
import { createLocalRestorePoints } from './restore-points.js';

export interface LocalCloudOptions {
  workDir: string;
  vms: LocalVm[];
  clock?: Clock;
  logger?: Logger;
  workers?: Partial<Omit<LocalWorkersOptions, 'workDir' | 'server' | 'clock' | 'logger'>>;
  beforeSnapshotCopy?: Parameters<typeof createLocalSnapshots>[0]['beforeCopy'];
}

export interface LocalCloud extends CloudPorts {
  restorePoints: RestorePoints;
  server: LoopbackServer;
  localWorkers: LocalWorkers;
  close(): Promise<void>;
}

export async function createLocalCloud(opts: LocalCloudOptions): Promise<LocalCloud> {
  const clock = opts.clock ?? systemClock;
  const logger = opts.logger ?? silentLogger;
  const server = await startLoopbackServer({ clock });
  const snapshots = createLocalSnapshots({ vms: opts.vms, workDir: opts.workDir, clock, beforeCopy: opts.beforeSnapshotCopy });
  const workers = createLocalWorkers({ workDir: opts.workDir, server, clock, logger, bundle: undefined, ...opts.workers });
  return {
    snapshots,
    workers,
    channel: workers,
    access: workers,
    catalog: createLocalCatalog({ workDir: opts.workDir }),
    restorePoints: createLocalRestorePoints(),
    server,
    localWorkers: workers,
    async close() {
      await workers.close();
      await snapshots.settle();
      await server.close();
    },
  };
}

export function bundleCacheDir(workDir: string): string {
  return join(workDir, 'bundles');
}
