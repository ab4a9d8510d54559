// An in-memory AWS account behind aws-sdk-client-mock: EC2 instances, volumes,
// snapshots and tags; SSM parameters, instance pings and Run Command; SQS
// queues; an S3 config bucket. Responses have the SDK's shapes and errors the
// services' names, so the adapters run unchanged; tests assert on the world
// (what is left running, staged, tagged), not on calls.

import { mockClient } from 'aws-sdk-client-mock';
import {
  EC2Client,
  CreateSnapshotsCommand,
  CreateTagsCommand,
  DeleteSnapshotCommand,
  DeleteTagsCommand,
  DescribeInstancesCommand,
  DescribeSnapshotsCommand,
  DescribeVolumesCommand,
  RunInstancesCommand,
  TerminateInstancesCommand,
  type Filter,
} from '@aws-sdk/client-ec2';
import {
  SSMClient,
  DescribeInstanceInformationCommand,
  GetCommandInvocationCommand,
  GetParameterCommand,
  ListCommandInvocationsCommand,
  SendCommandCommand,
} from '@aws-sdk/client-ssm';
import {
  SQSClient,
  CreateQueueCommand,
  DeleteMessageBatchCommand,
  DeleteMessageCommand,
  DeleteQueueCommand,
  GetQueueUrlCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
} from '@aws-sdk/client-sqs';
import {
  S3Client,
  CopyObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
} from '@aws-sdk/client-s3';

export const REGION = 'eu-west-1';
export const ACCOUNT = '111122223333';
export const BUCKET = 'tender-test-config';

export function awsError(name: string, message = name, status = 400): Error {
  return Object.assign(new Error(message), { name, $fault: status >= 500 ? 'server' : 'client', $metadata: { httpStatusCode: status } });
}

type Tags = Record<string, string>;
const toList = (t: Tags) => Object.entries(t).map(([Key, Value]) => ({ Key, Value }));

export interface FakeInstance {
  id: string;
  state: 'pending' | 'running' | 'stopping' | 'stopped' | 'shutting-down' | 'terminated';
  type: string;
  tags: Tags;
  volumes: Array<{ id: string; device: string; sizeGiB: number }>;
  launch?: Record<string, any>;
  /** SSM ping. */
  online: boolean;
  clientToken?: string;
}

export interface FakeSnapshot {
  id: string;
  volumeId: string;
  sizeGiB: number;
  state: 'pending' | 'completed' | 'error';
  stateMessage?: string;
  start: Date;
  tags: Tags;
}

export interface FakeCommand {
  id: string;
  instanceId: string;
  comment: string;
  script: string;
  status: 'Pending' | 'InProgress' | 'Success' | 'Failed' | 'TimedOut';
  code: number;
  stdout: string;
  stderr: string;
  polls: number;
}

export interface FakeQueue {
  name: string;
  url: string;
  tags: Tags;
  messages: Array<{ id: string; body: string; sent: number; receipt?: string; hiddenUntil: number }>;
}

export interface FakeAwsOptions {
  /** DescribeSnapshots calls before a pending snapshot completes. */
  snapshotPolls?: number;
  /** DescribeInstances calls before a pending instance runs (and is online in SSM). */
  bootPolls?: number;
  /** GetCommandInvocation calls before a Run Command ends. */
  commandPolls?: number;
  /** The sha256 the "worker" computes of the downloaded bundle (default: what the script expects). */
  bundleSha256?: (expected: string) => string;
  now?: () => number;
}

export function createFakeAws(opts: FakeAwsOptions = {}) {
  const now = opts.now ?? Date.now;
  const ec2 = mockClient(EC2Client);
  const ssm = mockClient(SSMClient);
  const sqs = mockClient(SQSClient);
  const s3 = mockClient(S3Client);
  let seq = 0;
  const id = (p: string) => `${p}-${(++seq).toString(16).padStart(17, '0')}`;

  /** Errors the next calls of a command throw, in order (then it behaves again). */
  const failures = new Map<string, Error[]>();
  const on = (mock: { on: (c: any) => { callsFake: (f: (input: any) => any) => unknown } }, Cmd: { name: string }, fn: (input: any) => any) =>
    mock.on(Cmd).callsFake(async (input: any) => {
      const f = failures.get(Cmd.name)?.shift();
      if (f) throw f;
      return fn(input);
    });

  const world = {
    instances: new Map<string, FakeInstance>(),
    snapshots: new Map<string, FakeSnapshot>(),
    parameters: new Map<string, string>([
      ['/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64', 'ami-0a1b2c3d4e5f60718'],
      ['/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64', 'ami-0f0e0d0c0b0a09080'],
    ]),
    commands: new Map<string, FakeCommand>(),
    queues: new Map<string, FakeQueue>(),
    deletedQueues: [] as string[],
    objects: new Map<string, string>(),
    snapPolls: new Map<string, number>(),
    bootPolls: new Map<string, number>(),
    /** Overrides what the install script does on the worker (a failing command). */
    scriptResult: undefined as undefined | ((c: FakeCommand) => Partial<FakeCommand> | undefined),
    /** Instances that never finish shutting down. */
    stuck: new Set<string>(),
    /** Called when a job lands on a job queue (a test's stand-in worker agent runs here). */
    onJob: undefined as undefined | ((queue: FakeQueue) => void),
  };

  const addVm = (vmId: string, tags: Tags, disks: Array<{ device: string; sizeGiB: number }>) => {
    world.instances.set(vmId, { id: vmId, state: 'running', type: 'm5.large', tags, online: false, volumes: disks.map((d) => ({ id: id('vol'), ...d })) });
  };

  // ---- EC2 -------------------------------------------------------------------
  const matches = (tags: Tags, filters: Filter[] | undefined, extra: (name: string) => string[] | undefined) =>
    (filters ?? []).every((f) => {
      const values = f.Values ?? [];
      if (f.Name!.startsWith('tag:')) return values.includes(tags[f.Name!.slice(4)] ?? '\0');
      if (f.Name === 'tag-key') return values.some((k) => k in tags);
      const got = extra(f.Name!);
      return got === undefined ? true : got.some((g) => values.includes(g));
    });

  const describeInstance = (i: FakeInstance) => {
    const polls = (world.bootPolls.get(i.id) ?? 0) + 1;
    world.bootPolls.set(i.id, polls);
    if (i.state === 'pending' && polls > (opts.bootPolls ?? 1)) {
      i.state = 'running';
      i.online = true;
    }
    if (i.state === 'shutting-down' && !world.stuck.has(i.id)) i.state = 'terminated';
    return {
      InstanceId: i.id,
      InstanceType: i.type,
      State: { Name: i.state },
      Tags: toList(i.tags),
      BlockDeviceMappings: i.volumes.map((v) => ({ DeviceName: v.device, Ebs: { VolumeId: v.id } })),
    };
  };

  on(ec2, DescribeInstancesCommand, (input) => {
    if (input.InstanceIds?.length) {
      const found = input.InstanceIds.map((x: string) => world.instances.get(x));
      if (found.some((x: unknown) => !x)) throw awsError('InvalidInstanceID.NotFound', `The instance IDs '${input.InstanceIds.join(',')}' do not exist`);
      return { Reservations: [{ OwnerId: ACCOUNT, Instances: found.map((i: FakeInstance) => describeInstance(i)) }] };
    }
    const list = [...world.instances.values()].filter((i) =>
      matches(i.tags, input.Filters, (n) => (n === 'instance-state-name' ? [i.state] : n === 'instance-id' ? [i.id] : undefined)),
    );
    return { Reservations: list.length ? [{ OwnerId: ACCOUNT, Instances: list.map(describeInstance) }] : [] };
  });

  on(ec2, DescribeVolumesCommand, (input) => {
    const ids = input.Filters?.find((f: Filter) => f.Name === 'volume-id')?.Values ?? [];
    const vols = [...world.instances.values()].flatMap((i) => i.volumes).filter((v) => ids.includes(v.id));
    return { Volumes: vols.map((v) => ({ VolumeId: v.id, Size: v.sizeGiB })) };
  });

  on(ec2, CreateSnapshotsCommand, (input) => {
    const inst = world.instances.get(input.InstanceSpecification.InstanceId);
    if (!inst) throw awsError('InvalidInstanceID.NotFound');
    const tags = Object.fromEntries((input.TagSpecifications?.[0]?.Tags ?? []).map((t: any) => [t.Key, t.Value]));
    const made = inst.volumes.map((v) => {
      const s: FakeSnapshot = { id: id('snap'), volumeId: v.id, sizeGiB: v.sizeGiB, state: 'pending', start: new Date(now()), tags: { ...tags } };
      world.snapshots.set(s.id, s);
      return s;
    });
    return { Snapshots: made.map((s) => ({ SnapshotId: s.id, VolumeId: s.volumeId, State: s.state, StartTime: s.start, VolumeSize: s.sizeGiB, Tags: toList(s.tags) })) };
  });

  on(ec2, DescribeSnapshotsCommand, (input) => {
    const list = [...world.snapshots.values()].filter((s) => matches(s.tags, input.Filters, () => undefined));
    for (const s of list) {
      const n = (world.snapPolls.get(s.id) ?? 0) + 1;
      world.snapPolls.set(s.id, n);
      if (s.state === 'pending' && n > (opts.snapshotPolls ?? 1)) s.state = 'completed';
    }
    return { Snapshots: list.map((s) => ({ SnapshotId: s.id, VolumeId: s.volumeId, State: s.state, StateMessage: s.stateMessage, StartTime: s.start, VolumeSize: s.sizeGiB, OwnerId: ACCOUNT, Tags: toList(s.tags) })) };
  });

  const resourceTags = (rid: string): Tags => {
    const t = world.snapshots.get(rid)?.tags ?? world.instances.get(rid)?.tags;
    if (!t) throw awsError(rid.startsWith('snap') ? 'InvalidSnapshot.NotFound' : 'InvalidInstanceID.NotFound', `${rid} does not exist`);
    return t;
  };
  on(ec2, CreateTagsCommand, (input) => {
    for (const r of input.Resources) for (const t of input.Tags) resourceTags(r)[t.Key] = t.Value;
    return {};
  });
  on(ec2, DeleteTagsCommand, (input) => {
    for (const r of input.Resources) {
      const tags = resourceTags(r);
      for (const t of input.Tags ?? []) if (t.Value === undefined || tags[t.Key] === t.Value) delete tags[t.Key];
    }
    return {};
  });
  on(ec2, DeleteSnapshotCommand, (input) => {
    if (!world.snapshots.delete(input.SnapshotId)) throw awsError('InvalidSnapshot.NotFound', `The snapshot '${input.SnapshotId}' does not exist.`);
    return {};
  });

  on(ec2, RunInstancesCommand, (input) => {
    const again = [...world.instances.values()].find((i) => i.clientToken && i.clientToken === input.ClientToken);
    if (again) {
      if (again.type !== input.InstanceType) throw awsError('IdempotentParameterMismatch', 'The client token you have provided is associated with a resource that was created with different parameters');
      return { OwnerId: ACCOUNT, Instances: [describeInstance(again)] };
    }
    const tags = Object.fromEntries((input.TagSpecifications?.find((t: any) => t.ResourceType === 'instance')?.Tags ?? []).map((t: any) => [t.Key, t.Value]));
    const i: FakeInstance = { id: id('i'), state: 'pending', type: input.InstanceType, tags, online: false, volumes: [], launch: input, clientToken: input.ClientToken };
    world.instances.set(i.id, i);
    return { OwnerId: ACCOUNT, Instances: [{ InstanceId: i.id, State: { Name: 'pending' } }] };
  });

  on(ec2, TerminateInstancesCommand, (input) => {
    for (const x of input.InstanceIds) {
      const i = world.instances.get(x);
      if (!i) throw awsError('InvalidInstanceID.NotFound', `The instance ID '${x}' does not exist`);
      if (i.state !== 'terminated') i.state = 'shutting-down';
    }
    return { TerminatingInstances: input.InstanceIds.map((x: string) => ({ InstanceId: x })) };
  });

  // ---- SSM -------------------------------------------------------------------
  on(ssm, GetParameterCommand, (input) => {
    const v = world.parameters.get(input.Name);
    if (v === undefined) throw awsError('ParameterNotFound', `Parameter ${input.Name} not found.`);
    return { Parameter: { Name: input.Name, Value: v, Type: 'String' } };
  });
  on(ssm, DescribeInstanceInformationCommand, (input) => {
    const ids = input.Filters?.[0]?.Values ?? [];
    return { InstanceInformationList: ids.map((x: string) => world.instances.get(x)).filter((i: FakeInstance | undefined) => i?.online).map((i: FakeInstance) => ({ InstanceId: i.id, PingStatus: 'Online' })) };
  });
  on(ssm, SendCommandCommand, (input) => {
    const inst = world.instances.get(input.InstanceIds[0]);
    if (!inst || !inst.online) throw awsError('InvalidInstanceId', 'Instances not in a valid state for account');
    const script: string = input.Parameters.commands[0];
    const c: FakeCommand = { id: id('cmd'), instanceId: inst.id, comment: input.Comment, script, status: 'InProgress', code: -1, stdout: '', stderr: '', polls: 0 };
    world.commands.set(c.id, c);
    return { Command: { CommandId: c.id, Status: 'Pending' } };
  });
  on(ssm, ListCommandInvocationsCommand, (input) => ({
    CommandInvocations: [...world.commands.values()].filter((c) => c.instanceId === input.InstanceId).map((c) => ({ CommandId: c.id, Comment: c.comment, Status: c.status })),
  }));
  on(ssm, GetCommandInvocationCommand, (input) => {
    const c = world.commands.get(input.CommandId);
    if (!c) throw awsError('InvocationDoesNotExist');
    c.polls++;
    if (c.status === 'InProgress' && c.polls > (opts.commandPolls ?? 1)) runScript(c);
    return { CommandId: c.id, InstanceId: c.instanceId, Status: c.status, ResponseCode: c.code, StandardOutputContent: c.stdout, StandardErrorContent: c.stderr };
  });

  /** What the worker machine does with the install script: fetch (the object must still be staged), check, start. */
  function runScript(c: FakeCommand) {
    const override = world.scriptResult?.(c);
    if (override) return Object.assign(c, override);
    const url = /curl [^']*'([^']+)'/.exec(c.script)?.[1] ?? '';
    const key = decodeURIComponent(new URL(url).pathname.slice(1).replace(`${BUCKET}/`, ''));
    const expected = /if \[ "\$GOT" != '([0-9a-f]{64})'/.exec(c.script)?.[1] ?? '';
    if (!world.objects.has(key)) return Object.assign(c, { status: 'Failed', code: 87, stdout: 'TENDER_BUNDLE_DOWNLOAD_FAILED\n', stderr: 'curl: (22) The requested URL returned error: 404' });
    const got = opts.bundleSha256?.(expected) ?? expected;
    if (got !== expected) return Object.assign(c, { status: 'Failed', code: 86, stdout: `TENDER_BUNDLE_INTEGRITY got=${got} expected=${expected}\n` });
    world.instances.get(c.instanceId)!.tags['fake:agent'] = 'running';
    return Object.assign(c, { status: 'Success', code: 0, stdout: `TENDER_INSTALLED ${got}\n` });
  }

  // ---- SQS -------------------------------------------------------------------
  const queueByUrl = (url: string) => {
    const q = [...world.queues.values()].find((x) => x.url === url);
    if (!q) throw awsError('AWS.SimpleQueueService.NonExistentQueue', 'The specified queue does not exist.');
    return q;
  };
  on(sqs, CreateQueueCommand, (input) => {
    let q = world.queues.get(input.QueueName);
    if (!q) {
      q = { name: input.QueueName, url: `https://sqs.${REGION}.amazonaws.com/${ACCOUNT}/${input.QueueName}`, tags: input.tags ?? {}, messages: [] };
      world.queues.set(q.name, q);
    }
    return { QueueUrl: q.url };
  });
  on(sqs, GetQueueUrlCommand, (input) => {
    const q = world.queues.get(input.QueueName);
    if (!q) throw awsError('AWS.SimpleQueueService.NonExistentQueue', 'The specified queue does not exist.');
    return { QueueUrl: q.url };
  });
  on(sqs, DeleteQueueCommand, (input) => {
    const q = queueByUrl(input.QueueUrl);
    world.queues.delete(q.name);
    world.deletedQueues.push(q.name);
    return {};
  });
  on(sqs, SendMessageCommand, (input) => {
    const q = queueByUrl(input.QueueUrl);
    q.messages.push({ id: id('msg'), body: input.MessageBody, sent: now(), hiddenUntil: 0 });
    if (q.name.endsWith('-job')) world.onJob?.(q);
    return { MessageId: q.messages.at(-1)!.id };
  });
  on(sqs, ReceiveMessageCommand, (input) => {
    const q = queueByUrl(input.QueueUrl);
    const visible = q.messages.filter((m) => m.hiddenUntil <= now()).slice(0, input.MaxNumberOfMessages ?? 1);
    for (const m of visible) {
      m.receipt = id('rh');
      m.hiddenUntil = now() + (input.VisibilityTimeout ?? 30) * 1000;
    }
    return { Messages: visible.map((m) => ({ MessageId: m.id, ReceiptHandle: m.receipt, Body: m.body, Attributes: { SentTimestamp: String(m.sent) } })) };
  });
  const deleteMessage = (url: string, receipt: string) => {
    const q = queueByUrl(url);
    q.messages = q.messages.filter((m) => m.receipt !== receipt);
  };
  on(sqs, DeleteMessageCommand, (input) => (deleteMessage(input.QueueUrl, input.ReceiptHandle), {}));
  on(sqs, DeleteMessageBatchCommand, (input) => {
    for (const e of input.Entries) deleteMessage(input.QueueUrl, e.ReceiptHandle);
    return { Successful: input.Entries.map((e: any) => ({ Id: e.Id })) };
  });

  // ---- S3 (the config bucket) -------------------------------------------------
  const body = (text: string) => ({ transformToString: async () => text });
  on(s3, GetObjectCommand, (input) => {
    const v = world.objects.get(input.Key);
    if (v === undefined) throw awsError('NoSuchKey', 'The specified key does not exist.', 404);
    return { Body: body(v) };
  });
  on(s3, PutObjectCommand, (input) => {
    world.objects.set(input.Key, typeof input.Body === 'string' ? input.Body : Buffer.from(input.Body).toString('utf8'));
    return {};
  });
  on(s3, CopyObjectCommand, (input) => {
    const from = decodeURIComponent(String(input.CopySource).slice(BUCKET.length + 1));
    const v = world.objects.get(from);
    if (v === undefined) throw awsError('NoSuchKey', 'The specified key does not exist.', 404);
    world.objects.set(input.Key, v);
    return {};
  });
  on(s3, ListObjectsV2Command, (input) => ({
    Contents: [...world.objects.keys()].filter((k) => k.startsWith(input.Prefix ?? '')).map((Key) => ({ Key, Size: 1 })),
    IsTruncated: false,
  }));
  on(s3, DeleteObjectsCommand, (input) => {
    for (const o of input.Delete.Objects) world.objects.delete(o.Key);
    return { Deleted: input.Delete.Objects };
  });

  const clients = { ec2: new EC2Client({ region: REGION }), ssm: new SSMClient({ region: REGION }), sqs: new SQSClient({ region: REGION }), s3: new S3Client({ region: REGION }) };
  return {
    world,
    mocks: { ec2, ssm, sqs, s3 },
    clients,
    addVm,
    /** The next `times` calls of this command throw `error`. */
    fail(Cmd: { name: string }, error: Error, times = 1) {
      failures.set(Cmd.name, [...(failures.get(Cmd.name) ?? []), ...Array.from({ length: times }, () => error)]);
    },
    restore() {
      ec2.restore();
      ssm.restore();
      sqs.restore();
      s3.restore();
    },
  };
}

export type FakeAws = ReturnType<typeof createFakeAws>;

export const BUNDLE = { key: 'worker/tender-worker-0123456789abcdef.tar.gz', sha256: 'ab'.repeat(32), bytes: 1234 };

/** Puts the worker bundle and its manifest in the config bucket, as the deploy does. */
export function uploadBundle(fake: FakeAws): void {
  fake.world.objects.set(BUNDLE.key, 'bundle bytes');
  fake.world.objects.set('worker/manifest.json', JSON.stringify(BUNDLE));
}

export const testPresign = async (_s3: unknown, bucket: string, key: string, expiresIn: number) =>
  `https://${bucket}.s3.${REGION}.amazonaws.com/${key.split('/').map(encodeURIComponent).join('/')}?X-Amz-Expires=${expiresIn}&X-Amz-Signature=f00d`;
