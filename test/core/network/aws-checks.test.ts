import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { checkAwsNetwork, preflightAws, requiredAwsServices, workerCallsKms, AWS_WORKER_SERVICES } from '../../../shared/core/network/aws-checks.js';
import { assertPreflight, failedChecks, toReport } from '../../../shared/core/network/report.js';
import { NetworkPreflightError } from '../../../shared/core/errors.js';
import { awsModel, clone, EXAMPLE1, EXAMPLE2, loadAwsRaw, type AwsRaw } from './fixtures.js';

type Example = typeof EXAMPLE1 | typeof EXAMPLE2;

interface Ctx {
  ex: Example;
  workerVpcId: string;
  repoVpcId: string;
  region: string;
  workerSubnetId: string;
  workerSgId: string;
}

interface Variant {
  name: string;
  check: string;
  mutate: (raw: AwsRaw, ctx: Ctx) => void;
  /** The failing finding's fix must contain these. */
  fixIncludes?: (ctx: Ctx, raw: AwsRaw) => string[];
  /** Only where the topology has the element to break. */
  applies?: (raw: AwsRaw, ctx: Ctx) => boolean;
  /** Repeated for each repository VPC. */
  perRepository?: boolean;
}

const vpcCidr = (raw: AwsRaw, vpcId: string) => raw.vpcs.find((v) => v.VpcId === vpcId)!.CidrBlock as string;
const peeringOf = (raw: AwsRaw, a: string, b: string) =>
  raw.peerings.find((p) => [p.RequesterVpcInfo.VpcId, p.AccepterVpcInfo.VpcId].sort().join() === [a, b].sort().join())!;
const tableOf = (raw: AwsRaw, subnetId: string, vpcId: string) =>
  raw.routeTables.find((t) => t.Associations.some((a: any) => a.SubnetId === subnetId)) ??
  raw.routeTables.find((t) => t.VpcId === vpcId && t.Associations.some((a: any) => a.Main));
const s3EndpointOf = (raw: AwsRaw, vpcId: string) => raw.endpoints.find((e) => e.VpcId === vpcId && /\.s3$/.test(e.ServiceName));
const serviceEndpoint = (raw: AwsRaw, ctx: Ctx, svc: string) =>
  raw.endpoints.find((e) => e.VpcId === ctx.workerVpcId && e.ServiceName === `com.amazonaws.${ctx.region}.${svc}`);

const SERVICES = requiredAwsServices({ kms: true }).map((s) => s.service);

const VARIANTS: Variant[] = [
  ...SERVICES.map((svc): Variant => ({
    name: `the ${svc} interface endpoint is missing`,
    check: `endpoint.${svc}`,
    mutate: (raw, ctx) => {
      raw.endpoints = raw.endpoints.filter((e) => e !== serviceEndpoint(raw, ctx, svc));
    },
    fixIncludes: (ctx) => [`--service-name com.amazonaws.${ctx.region}.${svc}`, `--vpc-id ${ctx.workerVpcId}`, '--vpc-endpoint-type Interface'],
  })),
  {
    name: 'the ssm endpoint is still pending',
    check: 'endpoint.ssm',
    mutate: (raw, ctx) => void (serviceEndpoint(raw, ctx, 'ssm').State = 'pending'),
  },
  {
    name: 'the sqs endpoint sits in another VPC',
    check: 'endpoint.sqs',
    mutate: (raw, ctx) => void (serviceEndpoint(raw, ctx, 'sqs').VpcId = ctx.repoVpcId),
    fixIncludes: (ctx) => [`com.amazonaws.${ctx.region}.sqs`],
  },
  {
    name: 'the repository has only an S3 gateway endpoint',
    check: 'endpoint.s3-interface',
    perRepository: true,
    mutate: (raw, ctx) => {
      const e = s3EndpointOf(raw, ctx.repoVpcId);
      Object.assign(e, { VpcEndpointType: 'Gateway', SubnetIds: [], Groups: [], NetworkInterfaceIds: [], DnsEntries: [], PrivateDnsEnabled: false,
        RouteTableIds: raw.routeTables.filter((t) => t.VpcId === ctx.repoVpcId).map((t) => t.RouteTableId) });
    },
    fixIncludes: (ctx) => ['--vpc-endpoint-type Interface', `--vpc-id ${ctx.repoVpcId}`, '.s3'],
  },
  {
    name: 'the repository has no S3 endpoint at all',
    check: 'endpoint.s3-interface',
    perRepository: true,
    mutate: (raw, ctx) => {
      raw.endpoints = raw.endpoints.filter((e) => e !== s3EndpointOf(raw, ctx.repoVpcId));
    },
  },
  {
    name: 'private DNS is off on the ec2messages endpoint',
    check: 'endpoint.private-dns',
    mutate: (raw, ctx) => void (serviceEndpoint(raw, ctx, 'ec2messages').PrivateDnsEnabled = false),
    fixIncludes: (ctx, raw) => [`--vpc-endpoint-id ${serviceEndpoint(raw, ctx, 'ec2messages').VpcEndpointId}`, '--private-dns-enabled'],
  },
  {
    name: 'the endpoints’ security group lets nothing in',
    check: 'sg.endpoint-ingress-443',
    mutate: (raw, ctx) => {
      const gid = serviceEndpoint(raw, ctx, 'ebs').Groups[0].GroupId;
      raw.securityGroups.find((g) => g.GroupId === gid).IpPermissions = [];
    },
    fixIncludes: () => ['authorize-security-group-ingress', 'FromPort=443', 'CidrIp='],
  },
  {
    name: 'the endpoints’ security group opens port 80 instead of 443',
    check: 'sg.endpoint-ingress-443',
    mutate: (raw, ctx) => {
      const gid = serviceEndpoint(raw, ctx, 'ebs').Groups[0].GroupId;
      for (const p of raw.securityGroups.find((g) => g.GroupId === gid).IpPermissions) Object.assign(p, { FromPort: 80, ToPort: 80 });
    },
  },
  {
    name: 'the S3 endpoint’s security group does not admit the appliance',
    check: 'sg.endpoint-ingress-443',
    perRepository: true,
    mutate: (raw, ctx) => {
      const gid = s3EndpointOf(raw, ctx.repoVpcId).Groups[0].GroupId;
      for (const p of raw.securityGroups.find((g) => g.GroupId === gid).IpPermissions) {
        p.IpRanges = p.IpRanges.filter((r: any) => r.CidrIp !== ctx.ex.input.applianceCidr);
      }
    },
    fixIncludes: (ctx) => [`CidrIp=${ctx.ex.input.applianceCidr}`],
  },
  {
    name: 'the S3 endpoint’s security group does not admit the worker VPC',
    check: 'sg.endpoint-ingress-443',
    perRepository: true,
    mutate: (raw, ctx) => {
      const gid = s3EndpointOf(raw, ctx.repoVpcId).Groups[0].GroupId;
      for (const p of raw.securityGroups.find((g) => g.GroupId === gid).IpPermissions) {
        p.IpRanges = p.IpRanges.filter((r: any) => r.CidrIp !== vpcCidr(raw, ctx.workerVpcId));
      }
    },
  },
  {
    name: 'the worker’s security group has no HTTPS egress to the repository',
    check: 'sg.worker-egress-443',
    perRepository: true,
    mutate: (raw, ctx) => {
      const g = raw.securityGroups.find((x) => x.GroupId === ctx.workerSgId);
      for (const p of g.IpPermissionsEgress) p.IpRanges = p.IpRanges.filter((r: any) => r.CidrIp !== vpcCidr(raw, ctx.repoVpcId));
      g.IpPermissionsEgress = g.IpPermissionsEgress.filter((p: any) => p.IpRanges.length);
    },
    fixIncludes: (ctx) => ['authorize-security-group-egress', `--group-id ${ctx.workerSgId}`],
  },
  {
    name: 'the peering connection waits for acceptance',
    check: 'peering.active',
    perRepository: true,
    mutate: (raw, ctx) => void (peeringOf(raw, ctx.workerVpcId, ctx.repoVpcId).Status = { Code: 'pending-acceptance', Message: 'Pending Acceptance' }),
    fixIncludes: (ctx, raw) => ['accept-vpc-peering-connection', peeringOf(raw, ctx.workerVpcId, ctx.repoVpcId).VpcPeeringConnectionId],
  },
  {
    name: 'there is no peering connection',
    check: 'peering.active',
    perRepository: true,
    mutate: (raw, ctx) => {
      raw.peerings = raw.peerings.filter((p) => p !== peeringOf(raw, ctx.workerVpcId, ctx.repoVpcId));
    },
    fixIncludes: (ctx) => ['create-vpc-peering-connection', `--vpc-id ${ctx.workerVpcId}`, `--peer-vpc-id ${ctx.repoVpcId}`],
  },
  {
    name: 'the worker subnet’s route table has no route to the repository',
    check: 'route.worker-to-repository',
    perRepository: true,
    mutate: (raw, ctx) => {
      const pcx = peeringOf(raw, ctx.workerVpcId, ctx.repoVpcId).VpcPeeringConnectionId;
      const t = tableOf(raw, ctx.workerSubnetId, ctx.workerVpcId);
      t.Routes = t.Routes.filter((r: any) => r.VpcPeeringConnectionId !== pcx);
    },
    fixIncludes: (ctx, raw) => [
      'aws ec2 create-route',
      `--route-table-id ${tableOf(raw, ctx.workerSubnetId, ctx.workerVpcId).RouteTableId}`,
      `--destination-cidr-block ${vpcCidr(raw, ctx.repoVpcId)}`,
      `--vpc-peering-connection-id ${peeringOf(raw, ctx.workerVpcId, ctx.repoVpcId).VpcPeeringConnectionId}`,
    ],
  },
  {
    name: 'the worker subnet loses its explicit association (the main table has no peering route)',
    check: 'route.worker-to-repository',
    applies: (raw, ctx) => raw.routeTables.some((t) => t.Associations.some((a: any) => a.SubnetId === ctx.workerSubnetId)),
    mutate: (raw, ctx) => {
      for (const t of raw.routeTables) t.Associations = t.Associations.filter((a: any) => a.SubnetId !== ctx.workerSubnetId);
    },
    fixIncludes: (ctx, raw) => [`--route-table-id ${raw.routeTables.find((t) => t.VpcId === ctx.workerVpcId && t.Associations.some((a: any) => a.Main)).RouteTableId}`],
  },
  {
    name: 'the repository has no return route to the workers',
    check: 'route.repository-to-worker',
    perRepository: true,
    mutate: (raw, ctx) => {
      const pcx = peeringOf(raw, ctx.workerVpcId, ctx.repoVpcId).VpcPeeringConnectionId;
      for (const t of raw.routeTables.filter((x) => x.VpcId === ctx.repoVpcId)) t.Routes = t.Routes.filter((r: any) => r.VpcPeeringConnectionId !== pcx);
    },
    fixIncludes: (ctx, raw) => [`--destination-cidr-block ${vpcCidr(raw, ctx.workerVpcId)}`, `--vpc-peering-connection-id ${peeringOf(raw, ctx.workerVpcId, ctx.repoVpcId).VpcPeeringConnectionId}`],
  },
  {
    name: 'the repository’s return route is a blackhole',
    check: 'route.repository-to-worker',
    perRepository: true,
    mutate: (raw, ctx) => {
      const pcx = peeringOf(raw, ctx.workerVpcId, ctx.repoVpcId).VpcPeeringConnectionId;
      for (const t of raw.routeTables) for (const r of t.Routes) if (t.VpcId === ctx.repoVpcId && r.VpcPeeringConnectionId === pcx) r.State = 'blackhole';
    },
    fixIncludes: () => ['aws ec2 replace-route'],
  },
  {
    name: 'the repository VPC gains a CIDR block overlapping the worker VPC',
    check: 'cidr.overlap',
    perRepository: true,
    mutate: (raw, ctx) => {
      raw.vpcs.find((v) => v.VpcId === ctx.repoVpcId).CidrBlockAssociationSet.push({
        AssociationId: 'vpc-cidr-assoc-0ffeeddccbbaa9988', CidrBlock: vpcCidr(raw, ctx.workerVpcId), CidrBlockState: { State: 'associated' } });
    },
  },
];

for (const ex of [EXAMPLE1, EXAMPLE2] as Example[]) {
  describe(`AWS network checks, seed 002 ${ex.dir}`, () => {
    const complete = loadAwsRaw(ex.dir);
    const region = ex.input.region;

    test('the complete topology passes every check', () => {
      // Act
      const findings = checkAwsNetwork(awsModel(clone(complete), region), ex.input);
      // Assess
      assert.deepEqual(failedChecks(findings), []);
      assert.deepEqual(findings.filter((f) => f.status === 'warn'), []);
      assert.equal(toReport(findings).ok, true);
      const checks = new Set(findings.map((f) => f.check));
      for (const id of ['placement', ...SERVICES.map((s) => `endpoint.${s}`), 'endpoint.s3-interface', 'endpoint.private-dns', 'sg.endpoint-ingress-443',
        'sg.worker-egress-443', 'peering.active', 'route.worker-to-repository', 'route.repository-to-worker', 'cidr.overlap']) {
        assert.ok(checks.has(id), `check ${id} ran`);
      }
      for (const repo of ex.repoVpcIds) {
        assert.ok(findings.some((f) => f.check === 'peering.active' && f.status === 'pass' && f.message.includes(repo)), `peering to ${repo} judged`);
      }
    });

    const workerSubnet = complete.subnets.find((s) => s.SubnetId === ex.input.workerSubnetId);
    for (const v of VARIANTS) {
      const repos = v.perRepository ? ex.repoVpcIds : [ex.repoVpcIds[0]!];
      for (const repoVpcId of repos) {
        const ctx: Ctx = { ex, workerVpcId: workerSubnet.VpcId, repoVpcId, region, workerSubnetId: ex.input.workerSubnetId, workerSgId: ex.input.workerSecurityGroupIds[0]! };
        if (v.applies && !v.applies(complete, ctx)) continue;
        test(`${v.name}${v.perRepository && repos.length > 1 ? ` (${repoVpcId})` : ''} → only ${v.check} fails`, () => {
          // Prepare
          const raw = clone(complete);
          v.mutate(raw, ctx);
          // Act
          const findings = checkAwsNetwork(awsModel(raw, region), ex.input);
          // Assess
          assert.deepEqual(failedChecks(findings), [v.check], JSON.stringify(findings.filter((f) => f.status !== 'pass'), null, 2));
          const failing = findings.filter((f) => f.status === 'fail');
          assert.equal(failing.length, 1);
          assert.ok(failing[0]!.message.length > 20);
          assert.ok(failing[0]!.fix, 'a failing finding carries a fix');
          for (const part of v.fixIncludes?.(ctx, raw) ?? []) assert.ok(failing[0]!.fix!.includes(part), `fix "${failing[0]!.fix}" names ${part}`);
        });
      }
    }
  });
}

describe('AWS network checks, details', () => {
  const complete = loadAwsRaw(EXAMPLE1.dir);
  const region = EXAMPLE1.input.region;

  test('a gateway endpoint explains why it is not enough', () => {
    const raw = clone(complete);
    Object.assign(raw.endpoints.find((e) => /\.s3$/.test(e.ServiceName)), { VpcEndpointType: 'Gateway', SubnetIds: [], Groups: [] });
    const f = checkAwsNetwork(awsModel(raw, region), EXAMPLE1.input).find((x) => x.check === 'endpoint.s3-interface')!;
    assert.equal(f.status, 'fail');
    assert.match(f.message, /gateway endpoints are not supported in private mode/);
    assert.match(f.fix!, /com\.amazonaws\.eu-central-1\.s3/);
  });

  test('without a repository VPC the S3 interface endpoint must be in the worker VPC', () => {
    const findings = checkAwsNetwork(awsModel(clone(complete), region), { ...EXAMPLE1.input, repositoryVpcIds: [] });
    assert.deepEqual(failedChecks(findings), ['endpoint.s3-interface']);
    assert.ok(!findings.some((f) => f.check.startsWith('route.') || f.check === 'peering.active'));
    assert.match(findings.find((f) => f.status === 'fail')!.fix!, /--vpc-id vpc-0a1f2e3d4c5b60001 .*com\.amazonaws\.eu-west-1\.s3/);
  });

  test('KMS needs an endpoint only when the key is a KMS key', () => {
    const raw = clone(complete);
    raw.endpoints = raw.endpoints.filter((e) => !e.ServiceName.endsWith('.kms'));
    const model = awsModel(raw, region);
    assert.deepEqual(failedChecks(checkAwsNetwork(model, { ...EXAMPLE1.input, services: requiredAwsServices({ kms: true }) })), ['endpoint.kms']);
    assert.deepEqual(failedChecks(checkAwsNetwork(model, { ...EXAMPLE1.input, services: requiredAwsServices({ kms: false }) })), []);
  });

  test('the documented service list is the default', () => {
    // No states endpoint: workers talk to the pipeline over SQS, never Step Functions.
    assert.deepEqual(requiredAwsServices().map((s) => s.service), ['ssm', 'ssmmessages', 'ec2messages', 'ebs', 'sqs', 'sts']);
    assert.ok(AWS_WORKER_SERVICES.every((s) => s.reason.length > 10));
    assert.deepEqual(requiredAwsServices({ kms: true }).at(-1)!.service, 'kms');
    // The worker calls KMS only when the KMS key wraps the repository key; a passphrase in SSM
    // (SecureString or a Secrets Manager secret through SSM's bridge) is decrypted by SSM.
    assert.equal(workerCallsKms({ kmsKeyId: 'k' }), true);
    assert.equal(workerCallsKms({ kmsKeyId: 'k', passphraseSecretArn: 'arn:aws:ssm:eu-west-1:1:parameter/p' }), false);
    assert.equal(workerCallsKms({ kmsKeyId: 'k', passphraseSecretArn: 'arn:aws:secretsmanager:eu-west-1:1:secret:p' }), false);
    assert.equal(workerCallsKms({ passphraseEnv: 'X' }), false);
  });

  test('an endpoint with no interface in the worker’s zone is a warning, not a failure', () => {
    const raw = clone(complete);
    for (const e of raw.endpoints) if (e.ServiceName.endsWith('.sts')) e.SubnetIds = ['subnet-0a1f2e3d4c5b61002'];
    const findings = checkAwsNetwork(awsModel(raw, region), EXAMPLE1.input);
    assert.deepEqual(failedChecks(findings), []);
    const warn = findings.filter((f) => f.status === 'warn');
    assert.equal(warn.length, 1);
    assert.equal(warn[0]!.check, 'endpoint.sts');
    assert.match(warn[0]!.fix!, /--add-subnet-ids subnet-0a1f2e3d4c5b61001/);
  });

  test('a worker subnet that is not in the data is a placement failure, and nothing else is judged', () => {
    const findings = checkAwsNetwork(awsModel(clone(complete), region), { ...EXAMPLE1.input, workerSubnetId: 'subnet-0000000000000dead' });
    assert.deepEqual(findings.map((f) => [f.check, f.status]), [['placement', 'fail']]);
  });

  test('no security group given: the VPC’s default group is the worker’s, and its open egress passes', () => {
    const findings = checkAwsNetwork(awsModel(clone(complete), region), { ...EXAMPLE1.input, workerSecurityGroupIds: [] });
    assert.deepEqual(failedChecks(findings), []);
    assert.equal(findings.find((f) => f.check === 'sg.worker-egress-443')!.resource, 'sg-0a1f2e3d4c5b62000');
  });

  test('a route through a more specific prefix elsewhere wins over the peering route', () => {
    const raw = clone(complete);
    const t = raw.routeTables.find((x) => x.RouteTableId === 'rtb-0a1f2e3d4c5b63001');
    t.Routes.push({ DestinationCidrBlock: '11.0.1.0/24', NatGatewayId: 'nat-0123456789abcdef0', Origin: 'CreateRoute', State: 'active' });
    const f = checkAwsNetwork(awsModel(raw, region), EXAMPLE1.input).find((x) => x.check === 'route.worker-to-repository')!;
    assert.equal(f.status, 'fail');
    assert.match(f.message, /11\.0\.1\.0\/24 to nat-0123456789abcdef0/);
  });

  test('preflight: the placement drives the same checks and fails fast with a named error', () => {
    // Prepare
    const model = awsModel(clone(complete), region);
    const placement = { subnet: EXAMPLE1.input.workerSubnetId, securityGroups: EXAMPLE1.input.workerSecurityGroupIds, network: EXAMPLE1.workerVpcId };
    // Act
    const ok = preflightAws(model, placement, { repositoryVpcIds: EXAMPLE1.repoVpcIds, kms: true });
    const broken = preflightAws(model, { ...placement, network: 'vpc-0999999999999999f' }, { repositoryVpcIds: EXAMPLE1.repoVpcIds });
    // Assess
    assert.deepEqual(failedChecks(ok), []);
    assert.doesNotThrow(() => assertPreflight(ok));
    assert.deepEqual(failedChecks(broken), ['placement']);
    assert.throws(() => assertPreflight(broken), (e: unknown) => e instanceof NetworkPreflightError && /placement .*vpc-0999999999999999f/s.test(e.message));
  });
});
