import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { cidrContains, cidrsOverlap, parseCidr, formatCidr } from '../../../shared/core/network/cidr.js';
import { formatFindingsJson, formatFindingsTable, toReport, assertPreflight, checkStatus } from '../../../shared/core/network/report.js';
import type { Finding } from '../../../shared/core/network/types.js';
import { NetworkPreflightError } from '../../../shared/core/errors.js';

describe('CIDR helpers', () => {
  test('containment and overlap', () => {
    assert.equal(cidrContains('10.0.0.0/16', '10.0.1.0/24'), true);
    assert.equal(cidrContains('10.0.1.0/24', '10.0.0.0/16'), false);
    assert.equal(cidrContains('0.0.0.0/0', '172.31.5.10/32'), true);
    assert.equal(cidrContains('172.31.5.10/32', '172.31.5.10'), true);
    assert.equal(cidrContains('11.0.0.0/16', '10.0.1.0/24'), false);
    assert.equal(cidrsOverlap('10.0.0.0/16', '10.0.128.0/17'), true);
    assert.equal(cidrsOverlap('12.0.0.0/16', '13.0.0.0/16'), false);
    assert.equal(formatCidr(parseCidr('10.0.1.77/24')!), '10.0.1.0/24');
    for (const bad of ['10.0.0/16', '10.0.0.0/33', '300.0.0.0/8', 'pl-12345', '::/0', '']) assert.equal(parseCidr(bad), undefined, bad);
    assert.equal(cidrContains('pl-12345', '10.0.0.0/16'), false);
  });
});

describe('report formatting', () => {
  const findings: Finding[] = [
    { check: 'endpoint.ssm', status: 'pass', resource: 'vpce-1', message: 'available', fix: null },
    { check: 'endpoint.sts', status: 'fail', resource: 'vpc-1', message: 'no interface endpoint for com.amazonaws.eu-west-1.sts', fix: 'aws ec2 create-vpc-endpoint --service-name com.amazonaws.eu-west-1.sts' },
    { check: 'endpoint.sts', status: 'warn', resource: 'vpce-2', message: 'cross-zone', fix: 'add a subnet' },
    { check: 'dns.record', status: 'pass', resource: '/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct', message: 'ok', fix: null },
  ];

  test('the table shows one block per check with its worst status, the fix and a summary', () => {
    const table = formatFindingsTable(findings);
    assert.match(table, /^PASS  endpoint\.ssm$/m);
    assert.match(table, /^FAIL  endpoint\.sts$/m);
    assert.match(table, /fix: aws ec2 create-vpc-endpoint --service-name com\.amazonaws\.eu-west-1\.sts/);
    assert.match(table, /storageAccounts\/acct/);
    assert.doesNotMatch(table, /\/subscriptions\//);
    assert.match(table, /3 checks: 2 pass, 0 warn, 1 fail/);
    assert.equal(checkStatus(findings, 'endpoint.sts'), 'fail');
  });

  test('JSON is { ok, findings } and warnings alone keep ok true', () => {
    const doc = JSON.parse(formatFindingsJson(findings));
    assert.equal(doc.ok, false);
    assert.equal(doc.findings.length, 4);
    assert.equal(toReport(findings.filter((f) => f.status !== 'fail')).ok, true);
  });

  test('assertPreflight throws NetworkPreflightError listing each failure and its fix', () => {
    assert.throws(() => assertPreflight(findings), (e: unknown) =>
      e instanceof NetworkPreflightError && e.retryable === false && e.message.includes('endpoint.sts (vpc-1)') && e.message.includes('fix: aws ec2 create-vpc-endpoint'));
    assert.doesNotThrow(() => assertPreflight(findings.filter((f) => f.status !== 'fail')));
  });
});
