import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cp, mkdtemp, readFile, rm, writeFile, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkNetworkCommand } from '../../../cli/check-network.js';
import { FIXTURES, EXAMPLE1, AZURE } from './fixtures.js';

function capture(cwd: string) {
  const out: string[] = [];
  const err: string[] = [];
  return {
    io: { stdout: (s: string) => void out.push(s), stderr: (s: string) => void err.push(s), cwd, env: {} as NodeJS.ProcessEnv },
    stdout: () => out.join(''),
    stderr: () => err.join(''),
  };
}

const AWS_FLAGS = [
  '--region', EXAMPLE1.input.region,
  '--worker-subnet', EXAMPLE1.input.workerSubnetId,
  '--worker-security-group', EXAMPLE1.input.workerSecurityGroupIds[0]!,
  '--repository-vpc', EXAMPLE1.repoVpcIds[0]!,
  '--appliance-cidr', '172.31.5.10/32',
];

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tender-check-network-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A private copy of a fixture folder, to break. */
async function copyFixture(name: string, as: string): Promise<string> {
  const to = join(dir, as);
  await cp(join(FIXTURES, name), to, { recursive: true });
  return to;
}

async function editJson(path: string, edit: (doc: any) => void) {
  const doc = JSON.parse(await readFile(path, 'utf8'));
  edit(doc);
  await writeFile(path, JSON.stringify(doc, null, 4));
}

describe('tender check-network (CLI function)', () => {
  test('--help explains both clouds, the files and the exit codes', async () => {
    const c = capture(dir);
    const code = await checkNetworkCommand(['--help'], c.io);
    assert.equal(code, 0);
    for (const s of ['check-network aws', 'check-network azure', 'describe-vpc-peering-connections.json', 'az network private-dns link vnet list', 'Exit codes']) {
      assert.ok(c.stdout().includes(s), `help mentions ${s}`);
    }
  });

  test('the complete example 1 topology exits 0 with a table per check', async () => {
    const c = capture(dir);
    const code = await checkNetworkCommand(['aws', '--from', join(FIXTURES, EXAMPLE1.dir), ...AWS_FLAGS], c.io);
    assert.equal(code, 0, c.stderr());
    assert.match(c.stdout(), /^PASS  endpoint\.ssm$/m);
    assert.match(c.stdout(), /^PASS  route\.repository-to-worker$/m);
    assert.match(c.stdout(), /0 fail/);
  });

  test('a broken topology exits 1 and --json prints { ok, findings } with the fix', async () => {
    // Prepare: the worker subnet's route table loses its route to the repository
    const from = await copyFixture(EXAMPLE1.dir, 'aws-no-route');
    await editJson(join(from, 'describe-route-tables.json'), (doc) => {
      const t = doc.RouteTables.find((x: any) => x.RouteTableId === 'rtb-0a1f2e3d4c5b63001');
      t.Routes = t.Routes.filter((r: any) => !r.VpcPeeringConnectionId);
    });
    const c = capture(dir);
    // Act
    const code = await checkNetworkCommand(['check-network', 'aws', '--from', 'aws-no-route', '--json', ...AWS_FLAGS], c.io);
    // Assess
    assert.equal(code, 1, c.stderr());
    const report = JSON.parse(c.stdout());
    assert.deepEqual(Object.keys(report), ['ok', 'findings']);
    assert.equal(report.ok, false);
    for (const f of report.findings) assert.deepEqual(Object.keys(f), ['check', 'status', 'resource', 'message', 'fix']);
    const failing = report.findings.filter((f: any) => f.status === 'fail');
    assert.deepEqual(failing.map((f: any) => f.check), ['route.worker-to-repository']);
    assert.equal(failing[0].fix, 'aws ec2 create-route --region eu-west-1 --route-table-id rtb-0a1f2e3d4c5b63001 --destination-cidr-block 11.0.0.0/16 --vpc-peering-connection-id pcx-0e5d4c3b2a1f00001');
  });

  test('a malformed JSON file exits 2 and is named', async () => {
    const from = await copyFixture(EXAMPLE1.dir, 'aws-malformed');
    const path = join(from, 'describe-security-groups.json');
    const text = await readFile(path, 'utf8');
    await writeFile(path, text.slice(0, Math.floor(text.length / 2)));
    const c = capture(dir);
    const code = await checkNetworkCommand(['aws', '--from', from, ...AWS_FLAGS], c.io);
    assert.equal(code, 2);
    assert.match(c.stderr(), /describe-security-groups\.json is not valid JSON/);
    assert.match(c.stderr(), /aws ec2 describe-security-groups --output json/);
    assert.equal(c.stdout(), '');
  });

  test('JSON of the wrong shape and a missing file exit 2, named', async () => {
    const from = await copyFixture(EXAMPLE1.dir, 'aws-wrong-shape');
    await writeFile(join(from, 'describe-vpcs.json'), JSON.stringify({ Subnets: [] }));
    await unlink(join(from, 'describe-vpc-endpoints.json'));
    const c = capture(dir);
    assert.equal(await checkNetworkCommand(['aws', '--from', from, ...AWS_FLAGS], c.io), 2);
    assert.match(c.stderr(), /describe-vpcs\.json is not the output of `aws ec2 describe-vpcs/);
    await writeFile(join(from, 'describe-vpcs.json'), await readFile(join(FIXTURES, EXAMPLE1.dir, 'describe-vpcs.json')));
    const c2 = capture(dir);
    assert.equal(await checkNetworkCommand(['aws', '--from', from, ...AWS_FLAGS], c2.io), 2);
    assert.match(c2.stderr(), /describe-vpc-endpoints\.json is missing: write it with `aws ec2 describe-vpc-endpoints/);
  });

  test('missing flags, unknown flags and a missing cloud exit 2', async () => {
    const empty = join(dir, 'empty-cwd');
    await cp(join(FIXTURES, EXAMPLE1.dir), join(empty, 'net'), { recursive: true });
    const cases: Array<[string[], RegExp]> = [
      [['aws', '--from', 'net'], /missing --region/],
      [['aws', '--from', 'net', '--region', 'eu-west-1'], /missing --worker-subnet/],
      [['aws', '--bogus'], /Unknown option '--bogus'/],
      [[], /name the cloud/],
      [['gcp'], /unknown cloud "gcp"/],
      [['azure', '--repository-vpc', 'vpc-1'], /--repository-vpc is not an option for azure/],
    ];
    for (const [argv, expected] of cases) {
      const c = capture(empty);
      assert.equal(await checkNetworkCommand(argv, c.io), 2, argv.join(' '));
      assert.match(c.stderr(), expected);
    }
  });

  test('without flags the placement comes from tender.config.yaml, and a KMS key requires the kms endpoint', async () => {
    // Prepare: a config placing workers like example 1, with a KMS repository key; the kms endpoint is gone
    const cwd = join(dir, 'with-config');
    const from = join(cwd, 'net');
    await cp(join(FIXTURES, EXAMPLE1.dir), from, { recursive: true });
    await writeFile(join(cwd, 'tender.config.yaml'), [
      'policies:',
      '  - name: web',
      '    provider: aws',
      '    vms: { tags: { backup: daily } }',
      '    repository:',
      '      url: s3://tender-repo/web',
      '      key: { kmsKeyId: arn:aws:kms:eu-west-1:111122223333:key/1b2c3d4e-0000-4000-8000-000000000001 }',
      '    worker:',
      '      placement:',
      '        eu-west-1:',
      `          subnet: ${EXAMPLE1.input.workerSubnetId}`,
      `          securityGroups: [${EXAMPLE1.input.workerSecurityGroupIds[0]}]`,
      `          network: ${EXAMPLE1.workerVpcId}`,
      '',
    ].join('\n'));
    const args = ['aws', '--from', 'net', '--repository-vpc', EXAMPLE1.repoVpcIds[0]!, '--json'];
    // Act + Assess: complete → 0
    const ok = capture(cwd);
    assert.equal(await checkNetworkCommand(args, ok.io), 0, ok.stderr());
    assert.ok(JSON.parse(ok.stdout()).findings.some((f: any) => f.check === 'endpoint.kms' && f.status === 'pass'));
    // without the kms endpoint → 1, endpoint.kms
    await editJson(join(from, 'describe-vpc-endpoints.json'), (doc) => {
      doc.VpcEndpoints = doc.VpcEndpoints.filter((e: any) => !e.ServiceName.endsWith('.kms'));
    });
    const broken = capture(cwd);
    assert.equal(await checkNetworkCommand(args, broken.io), 1);
    const failing = JSON.parse(broken.stdout()).findings.filter((f: any) => f.status === 'fail');
    assert.deepEqual(failing.map((f: any) => f.check), ['endpoint.kms']);
    assert.match(failing[0].fix, /--service-name com\.amazonaws\.eu-west-1\.kms/);
    // a flag overrides the config's subnet
    const override = capture(cwd);
    assert.equal(await checkNetworkCommand([...args, '--worker-subnet', 'subnet-0000000000000dead'], override.io), 1);
    assert.deepEqual(JSON.parse(override.stdout()).findings.map((f: any) => f.check), ['placement']);
  });

  test('an invalid config exits 2 with the config’s own message', async () => {
    const cwd = join(dir, 'bad-config');
    await cp(join(FIXTURES, EXAMPLE1.dir), join(cwd, 'net'), { recursive: true });
    await writeFile(join(cwd, 'tender.config.yaml'), 'policies: []\n');
    const c = capture(cwd);
    assert.equal(await checkNetworkCommand(['aws', '--from', 'net'], c.io), 2);
    assert.match(c.stderr(), /tender\.config\.yaml is not valid/);
  });

  test('azure: the complete topology exits 0, a broken copy exits 1, a malformed file exits 2', async () => {
    const flags = ['--region', 'westeurope', '--worker-subnet', 'workers', '--worker-vnet', 'tender-workers-vnet'];
    const ok = capture(dir);
    assert.equal(await checkNetworkCommand(['azure', '--from', join(FIXTURES, AZURE.dir), ...flags], ok.io), 0, ok.stderr());
    assert.match(ok.stdout(), /^PASS  dns\.record$/m);

    const from = await copyFixture(AZURE.dir, 'azure-broken');
    await editJson(join(from, 'network-private-endpoint-list.json'), (doc) => {
      doc.splice(doc.findIndex((p: any) => p.name.endsWith('-queue')), 1);
    });
    const broken = capture(dir);
    assert.equal(await checkNetworkCommand(['azure', '--from', from, '--json', ...flags], broken.io), 1);
    const failing = JSON.parse(broken.stdout()).findings.filter((f: any) => f.status === 'fail');
    assert.deepEqual(failing.map((f: any) => f.check), ['endpoint.queue']);
    assert.match(failing[0].fix, /az network private-endpoint create .*--group-id queue/);

    await writeFile(join(from, 'network-private-dns-zone-list.json'), '[{"id": "/subscriptions/x", "name": ');
    const bad = capture(dir);
    assert.equal(await checkNetworkCommand(['azure', '--from', from, ...flags], bad.io), 2);
    assert.match(bad.stderr(), /network-private-dns-zone-list\.json is not valid JSON/);
  });

  test('azure: the deployment id defaults to the config’s applianceId', async () => {
    const cwd = join(dir, 'azure-config');
    await cp(join(FIXTURES, AZURE.dir), join(cwd, 'net'), { recursive: true });
    await writeFile(join(cwd, 'tender.config.yaml'), [
      'applianceId: prod-eu',
      'policies:',
      '  - name: vms',
      '    provider: azure',
      '    vms: { ids: [vm1] }',
      '    repository: { url: azblob://acct/backups, key: { passphraseEnv: TENDER_PASSPHRASE } }',
      '    worker:',
      '      placement:',
      `        westeurope: { subnet: ${AZURE.input.workerSubnet}, network: tender-workers-vnet }`,
      '',
    ].join('\n'));
    const c = capture(cwd);
    assert.equal(await checkNetworkCommand(['azure', '--from', 'net', '--json'], c.io), 1);
    const failing = JSON.parse(c.stdout()).findings.filter((f: any) => f.status === 'fail');
    assert.deepEqual(failing.map((f: any) => f.check), ['storage.account']);
    assert.match(failing[0].message, /tender:appliance=prod-eu/);
    const c2 = capture(cwd);
    assert.equal(await checkNetworkCommand(['azure', '--from', 'net', '--deployment-id', 'tender'], c2.io), 0, c2.stdout());
  });
});
