// Every port the pipeline needs, on AWS: what functions/aws-deps.ts builds
// for the Lambdas and what the mocked-client tests build with mocked clients.

import type { S3Client } from '@aws-sdk/client-s3';
import type { CloudPorts } from '../ports/cloud.js';
import type { RestorePoints } from '../ports/restore-points.js';
import type { Clock } from '../core/clock.js';
import { systemClock } from '../core/clock.js';
import type { Logger } from '../core/logger.js';
import { silentLogger } from '../core/logger.js';
import type { AwsNetworkModel } from '../core/network/types.js';
import type { AwsSettings } from './settings.js';
import { defaultClients, defaultS3Client, type ClientsFor } from './clients.js';
import { createConfigBucket } from './run-resources.js';
import { createEc2Snapshots, type Ec2Snapshots } from './ec2-snapshots.js';
import { createEc2Workers, type Ec2Workers } from './ec2-workers.js';
import { createSqsChannel } from './sqs-channel.js';
import { createS3Catalog } from './s3-catalog.js';
import { createAwsRestorePoints } from './restore-points.js';
import { createAwsNetworkReader } from './network-reader.js';

export interface AwsCloudOptions {
  settings: AwsSettings;
  /** Backup-account clients (workers, queues, SSM). */
  clients?: ClientsFor;
  /** Production-account clients (VMs, snapshots); default: the snapshot role's, or `clients`. */
  snapshotClients?: ClientsFor;
  s3?: S3Client;
  readNetwork?: (region: string) => Promise<AwsNetworkModel>;
  restorePoints?: RestorePoints;
  clock?: Clock;
  logger?: Logger;
  /** Test knobs: polling without real waits. */
  pollMs?: number;
  terminateWaitMs?: number;
  installTimeoutMs?: number;
  presign?: (s3: S3Client, bucket: string, key: string, expiresIn: number) => Promise<string>;
}

export interface AwsCloud extends CloudPorts {
  snapshots: Ec2Snapshots;
  workers: Ec2Workers;
  restorePoints: RestorePoints;
}

export function createAwsCloud(opts: AwsCloudOptions): AwsCloud {
  const s = opts.settings;
  const clock = opts.clock ?? systemClock;
  const logger = opts.logger ?? silentLogger;
  const clients = opts.clients ?? defaultClients();
  const snapshotClients = opts.snapshotClients ?? (s.snapshotRole && !opts.clients ? defaultClients(s.snapshotRole) : clients);
  const s3 = opts.s3 ?? defaultS3Client(s.region);
  const configBucket = createConfigBucket({ s3, bucket: s.configBucket });
  const readNetwork = opts.readNetwork ?? ((region: string) => createAwsNetworkReader({ region, client: clients.ec2(region) }).read());
  const channel = createSqsChannel({
    clients,
    snapshotClients,
    // What the worker assumes to read production snapshots: the read-only role when there is one.
    snapshotRole: s.workerSnapshotRole ?? s.snapshotRole,
    configBucket,
    namePrefix: s.namePrefix,
    regions: s.regions,
    heartbeatTimeoutMs: s.heartbeatTimeoutSeconds * 1000,
    clock,
    logger,
  });
  return {
    snapshots: createEc2Snapshots({ clients: snapshotClients, regions: s.regions, clock }),
    workers: createEc2Workers({
      clients,
      s3,
      configBucket,
      namePrefix: s.namePrefix,
      regions: s.regions,
      instanceProfile: s.workerInstanceProfile,
      os: s.workerOs,
      amiOverride: s.workerAmi,
      preflight: s.networkPreflight,
      repositoryVpcIds: s.repositoryVpcIds,
      readNetwork,
      clock,
      logger,
      pollMs: opts.pollMs,
      terminateWaitMs: opts.terminateWaitMs,
      installTimeoutMs: opts.installTimeoutMs,
      presign: opts.presign,
    }),
    channel,
    access: channel,
    catalog: createS3Catalog({ configBucket }),
    restorePoints: opts.restorePoints ?? createAwsRestorePoints({ ssm: () => clients.ssm(s.region) }),
  };
}
