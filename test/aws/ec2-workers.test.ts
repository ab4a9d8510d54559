// The EC2 worker adapter against mocked EC2 / SSM / S3 / SQS: how a worker is
// launched (and never twice), its readiness, the Run Command install with its
// digest check, and termination.

import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { RunInstancesCommand, TerminateInstancesCommand } from '@aws-sdk/client-ec2';
import { SendCommandCommand, GetParameterCommand } from '@aws-sdk/client-ssm';
import { createEc2Workers } from '../../shared/aws/ec2-workers.js';
import { createConfigBucket } from '../../shared/aws/run-resources.js';
import { sameClients } from '../../shared/aws/clients.js';
import { clearAmiCache } from '../../shared/aws/worker-ami.js';
import { readAwsNetworkFromDir } from '../../shared/aws/network-reader.js';
import { selectWorkerProfile } from '../../shared/core/profiles.js';
import { BundleIntegrityError, CapacityError, ConfigError, NetworkPreflightError, NotReadyError, TransientError, ValidationError, WorkerFailedError } from '../../shared/core/errors.js';
import { fixedClock } from '../../shared/core/clock.js';
import type { DeployWorkerRequest, Vm } from '../../shared/ports/cloud.js';
import { BUCKET, BUNDLE, REGION, awsError, createFakeAws, testPresign, uploadBundle, type FakeAws } from './fake-aws.js';
import { FIXTURES, EXAMPLE1 } from '../core/network/fixtures.js';

let fake: FakeAws;
afterEach(() => {
  fake?.restore();
  clearAmiCache();
});

const vm: Vm = { vmId: 'i-0aaaaaaaaaaaaaaa1', name: 'web-1', region: REGION, tags: {}, disks: [{ diskId: 'vol-1', sizeBytes: 8 * 1024 ** 3 }] };

function setup(opts: { workers?: Partial<Parameters<typeof createEc2Workers>[0]>; fake?: Parameters<typeof createFakeAws>[0] } = {}) {
  fake = createFakeAws(opts.fake);
  uploadBundle(fake);
  const clock = fixedClock('2024-05-01T02:00:00Z');
  const workers = createEc2Workers({
    clients: sameClients(fake.clients),
    s3: fake.clients.s3,
    configBucket: createConfigBucket({ s3: fake.clients.s3, bucket: BUCKET }),
    namePrefix: 'tender-test',
    regions: [REGION],
    instanceProfile: 'arn:aws:iam::111122223333:instance-profile/tender-test-worker',
    presign: testPresign,
    pollMs: 1000,
    clock,
    preflight: 'off',
    ...opts.workers,
  });
  return { workers, clock };
}

function request(over: Partial<DeployWorkerRequest> = {}): DeployWorkerRequest {
  return {
    runId: 'r1',
    vm,
    profile: selectWorkerProfile({ provider: 'aws', totalDiskBytes: 8 * 1024 ** 3 }),
    placement: { subnet: 'subnet-0abc', securityGroups: ['sg-0abc'] },
    privateNetwork: true,
    tags: { Name: 'tender-web', 'tender:run': 'r1', 'tender:vm': vm.vmId, 'tender:appliance': 'acme' },
    ...over,
  };
}

async function readyWorker(workers: ReturnType<typeof setup>['workers'], req = request()) {
  const ref = await workers.deployWorker(req);
  while ((await workers.getWorkerState(ref)) !== 'ready');
  return ref;
}

test('deployWorker: the profile\'s instance type in the placement subnet, no public IP, IMDSv2 required, the worker profile, templated + Tender tags, a ClientToken; the AMI from the public AL2023 parameter', async () => {
  // Prepare
  const { workers } = setup();
  // Act
  const ref = await workers.deployWorker(request());
  // Assess
  const launch = fake.world.instances.get(ref.workerId)!.launch!;
  assert.equal(launch.InstanceType, 'c5.large');
  assert.equal(launch.ImageId, 'ami-0a1b2c3d4e5f60718');
  assert.deepEqual(launch.NetworkInterfaces, [{ DeviceIndex: 0, SubnetId: 'subnet-0abc', Groups: ['sg-0abc'], AssociatePublicIpAddress: false, DeleteOnTermination: true }]);
  assert.equal(launch.MetadataOptions.HttpTokens, 'required');
  assert.equal(launch.IamInstanceProfile.Arn, 'arn:aws:iam::111122223333:instance-profile/tender-test-worker');
  assert.match(launch.ClientToken, /^[0-9a-f]{64}$/);
  assert.equal(launch.InstanceInitiatedShutdownBehavior, 'terminate');
  const tags = fake.world.instances.get(ref.workerId)!.tags;
  assert.equal(tags.Name, 'tender-web');
  assert.equal(tags['tender:role'], 'worker');
  assert.equal(tags['tender:run'], 'r1');
  for (const spec of launch.TagSpecifications) assert.ok(['instance', 'volume', 'network-interface'].includes(spec.ResourceType));
  assert.equal(ref.region, REGION);
});

test('deployWorker: a re-invoked step gets the same worker — found by its tags, and the same ClientToken if the first call was lost', async () => {
  const { workers } = setup();
  const a = await workers.deployWorker(request());
  const b = await workers.deployWorker(request());
  assert.equal(a.workerId, b.workerId);
  assert.equal(fake.mocks.ec2.commandCalls(RunInstancesCommand).length, 1);
  // The tags were not visible yet (eventual consistency): RunInstances is called again with the same token.
  fake.world.instances.get(a.workerId)!.tags['tender:run'] = 'hidden';
  const c = await workers.deployWorker(request());
  assert.equal(c.workerId, a.workerId, 'ClientToken returned the same instance');
  assert.equal(fake.world.instances.size, 1);
});

test('deployWorker: public mode asks for a public IP; Graviton types get the arm64 image; an AMI override is used as given', async () => {
  const { workers } = setup({ workers: { amiOverride: undefined } });
  const pub = await workers.deployWorker(request({ privateNetwork: false, runId: 'rp' }));
  assert.equal(fake.world.instances.get(pub.workerId)!.launch!.NetworkInterfaces[0].AssociatePublicIpAddress, true);
  const arm = await workers.deployWorker(request({ runId: 'ra', profile: { name: 'small', instanceType: 'c7g.large' } }));
  assert.equal(fake.world.instances.get(arm.workerId)!.launch!.ImageId, 'ami-0f0e0d0c0b0a09080');
  fake.restore();
  const own = setup({ workers: { amiOverride: 'ami-0123456789abcdef0' } });
  const calls = fake.mocks.ssm.commandCalls(GetParameterCommand).length;
  const o = await own.workers.deployWorker(request({ runId: 'ro' }));
  assert.equal(fake.world.instances.get(o.workerId)!.launch!.ImageId, 'ami-0123456789abcdef0');
  assert.equal(fake.mocks.ssm.commandCalls(GetParameterCommand).length, calls, 'no parameter read');
});

test('deployWorker: InsufficientInstanceCapacity → CapacityError (retried), throttling → TransientError, IdempotentParameterMismatch → ValidationError', async () => {
  const { workers } = setup();
  fake.fail(RunInstancesCommand, awsError('InsufficientInstanceCapacity', 'We currently do not have sufficient c5.large capacity in the Availability Zone you requested (eu-west-1a).', 500));
  await assert.rejects(workers.deployWorker(request()), (e: Error) => e instanceof CapacityError && e.retryable && /worker\.profiles/.test(e.message));
  fake.fail(RunInstancesCommand, awsError('RequestLimitExceeded', 'Request limit exceeded.', 503));
  await assert.rejects(workers.deployWorker(request()), TransientError);
  // The first worker of this (run, VM) is gone; the step comes back with other parameters under the same token.
  const first = await workers.deployWorker(request());
  fake.world.instances.get(first.workerId)!.state = 'terminated';
  await assert.rejects(workers.deployWorker(request({ profile: { name: 'medium', instanceType: 'c5.2xlarge' } })), (e: Error) => e instanceof ValidationError && /different parameters/.test(e.message));
});

test('deployWorker: no placement for the Region is a ConfigError; in private mode a network missing an endpoint stops the deploy with NetworkPreflightError', async () => {
  const model = await readAwsNetworkFromDir(`${FIXTURES}${EXAMPLE1.dir}`, REGION);
  const placement = { subnet: EXAMPLE1.input.workerSubnetId, securityGroups: EXAMPLE1.input.workerSecurityGroupIds, network: EXAMPLE1.workerVpcId };
  // Prepare: the seed's example-1 network passes as is…
  const { workers } = setup({ workers: { preflight: 'enforce', readNetwork: async () => model, repositoryVpcIds: EXAMPLE1.repoVpcIds } });
  await assert.rejects(workers.deployWorker(request({ placement: undefined })), ConfigError);
  const ok = await workers.deployWorker(request({ placement }));
  assert.ok(ok.workerId);
  // …and without its SQS endpoint it does not.
  const broken = structuredClone(model);
  broken.endpoints = broken.endpoints.filter((e) => !e.serviceName.endsWith('.sqs'));
  fake.restore();
  const again = setup({ workers: { preflight: 'enforce', readNetwork: async () => broken, repositoryVpcIds: EXAMPLE1.repoVpcIds } });
  await assert.rejects(again.workers.deployWorker(request({ placement, runId: 'r2' })), (e: Error) => e instanceof NetworkPreflightError && /endpoint\.sqs/.test(e.message));
  assert.equal(fake.mocks.ec2.commandCalls(RunInstancesCommand).length, 0, 'no worker started');
  // Without a kms endpoint: a repository key KMS wraps needs one (the worker calls KMS), a
  // passphrase in SSM does not (SSM decrypts it).
  const noKms = structuredClone(model);
  noKms.endpoints = noKms.endpoints.filter((e) => !e.serviceName.endsWith('.kms'));
  fake.restore();
  const third = setup({ workers: { preflight: 'enforce', readNetwork: async () => noKms, repositoryVpcIds: EXAMPLE1.repoVpcIds } });
  await assert.rejects(third.workers.deployWorker(request({ placement, runId: 'r3', repositoryKey: { kmsKeyId: 'arn:aws:kms:eu-west-1:111122223333:key/k' } })), (e: Error) => e instanceof NetworkPreflightError && /endpoint\.kms/.test(e.message));
  assert.ok((await third.workers.deployWorker(request({ placement, runId: 'r4', repositoryKey: { kmsKeyId: 'k', passphraseSecretArn: 'arn:aws:ssm:eu-west-1:111122223333:parameter/p' } }))).workerId);
});

test('getWorkerState: starting while pending or not yet online in SSM, ready once online, failed when stopped, gone when terminated or unknown', async () => {
  const { workers } = setup({ fake: { bootPolls: 2 } });
  const ref = await workers.deployWorker(request());
  assert.equal(await workers.getWorkerState(ref), 'starting');
  assert.equal(await workers.getWorkerState(ref), 'starting');
  assert.equal(await workers.getWorkerState(ref), 'ready');
  fake.world.instances.get(ref.workerId)!.state = 'stopped';
  assert.equal(await workers.getWorkerState(ref), 'failed');
  fake.world.instances.get(ref.workerId)!.state = 'terminated';
  assert.equal(await workers.getWorkerState(ref), 'gone');
  assert.equal(await workers.getWorkerState({ workerId: 'i-0fffffffffffffff0', region: REGION }), 'gone');
});

test('installWorker: stages the bundle per (run, VM), sends AWS-RunShellScript with a short-lived URL and the sha256, and tags the worker; a second call sends nothing', async () => {
  // Prepare
  const { workers } = setup();
  const ref = await readyWorker(workers);
  // Act
  const res = await workers.installWorker({ runId: 'r1', vmId: vm.vmId, worker: ref });
  const again = await workers.installWorker({ runId: 'r1', vmId: vm.vmId, worker: ref });
  // Assess
  assert.equal(res.bundleSha256, BUNDLE.sha256);
  assert.equal(again.bundleSha256, BUNDLE.sha256);
  assert.equal(fake.mocks.ssm.commandCalls(SendCommandCommand).length, 1);
  const send = fake.mocks.ssm.commandCalls(SendCommandCommand)[0]!.args[0].input as any;
  assert.equal(send.DocumentName, 'AWS-RunShellScript');
  const script: string = send.Parameters.commands[0];
  assert.match(script, /staging\/r1\/i-0aaaaaaaaaaaaaaa1\/tender-worker\.tar\.gz\?X-Amz-Expires=300/);
  assert.match(script, new RegExp(`sha256sum bundle.tar.gz[\\s\\S]*${BUNDLE.sha256}`));
  assert.match(script, /exit 86/);
  assert.match(script, /TENDER_JOB_QUEUE_URL='https:\/\/sqs\./);
  assert.ok([...fake.world.objects.keys()].includes('staging/r1/i-0aaaaaaaaaaaaaaa1/tender-worker.tar.gz'));
  assert.equal(fake.world.instances.get(ref.workerId)!.tags['tender:installed'], BUNDLE.sha256);
  assert.equal(fake.world.instances.get(ref.workerId)!.tags['fake:agent'], 'running');
  assert.equal(fake.world.queues.size, 2, 'job and status queues');
});

test('installWorker: a bundle whose digest does not match is refused (BundleIntegrityError) and never started', async () => {
  const { workers } = setup({ fake: { bundleSha256: () => 'cd'.repeat(32) } });
  const ref = await readyWorker(workers);
  await assert.rejects(workers.installWorker({ runId: 'r1', vmId: vm.vmId, worker: ref }), (e: Error) => e instanceof BundleIntegrityError && e.message.includes('cd'.repeat(32)));
  assert.equal(fake.world.instances.get(ref.workerId)!.tags['fake:agent'], undefined);
  assert.equal(fake.world.instances.get(ref.workerId)!.tags['tender:installed'], undefined);
});

test('installWorker: an SSM command that Failed is a WorkerFailedError with its output; a worker SSM cannot reach yet is NotReadyError; no bundle uploaded is a ConfigError', async () => {
  const { workers } = setup();
  const ref = await readyWorker(workers);
  fake.world.scriptResult = () => ({ status: 'Failed', code: 1, stderr: 'tar: Unexpected EOF in archive' });
  await assert.rejects(workers.installWorker({ runId: 'r1', vmId: vm.vmId, worker: ref }), (e: Error) => e instanceof WorkerFailedError && /Unexpected EOF/.test(e.message));
  fake.world.scriptResult = undefined;
  fake.world.instances.get(ref.workerId)!.online = false;
  await assert.rejects(workers.installWorker({ runId: 'r1', vmId: vm.vmId, worker: ref }), NotReadyError);
  fake.world.instances.get(ref.workerId)!.online = true;
  fake.world.objects.delete('worker/manifest.json');
  await assert.rejects(workers.installWorker({ runId: 'r1', vmId: vm.vmId, worker: ref }), (e: Error) => e instanceof ConfigError && /worker\/manifest\.json/.test(e.message));
});

test('deallocateWorker: terminates and waits until terminated; finds the worker by its tags without a ref; a worker already gone is not an error', async () => {
  const { workers } = setup();
  const ref = await readyWorker(workers);
  await workers.deallocateWorker({ runId: 'r1', vmId: vm.vmId });
  assert.equal(fake.world.instances.get(ref.workerId)!.state, 'terminated');
  await workers.deallocateWorker({ runId: 'r1', vmId: vm.vmId, worker: ref });
  await workers.deallocateWorker({ runId: 'r1', vmId: vm.vmId, worker: { workerId: 'i-0fffffffffffffff0', region: REGION } });
  assert.ok(fake.mocks.ec2.commandCalls(TerminateInstancesCommand).length >= 1);
});

test('deallocateWorker: a worker still shutting down at the deadline is NotReadyError (the step is retried until it is gone)', async () => {
  const { workers } = setup({ workers: { terminateWaitMs: 5000 } });
  const ref = await readyWorker(workers);
  fake.world.stuck.add(ref.workerId);
  await assert.rejects(workers.deallocateWorker({ runId: 'r1', vmId: vm.vmId, worker: ref }), NotReadyError);
  fake.world.stuck.delete(ref.workerId);
  await workers.deallocateWorker({ runId: 'r1', vmId: vm.vmId, worker: ref });
  assert.equal(fake.world.instances.get(ref.workerId)!.state, 'terminated');
});
