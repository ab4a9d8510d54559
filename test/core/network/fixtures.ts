// Loads the network fixtures (test/fixtures/network/*) as raw CLI items, so
// tests can break one element of a complete topology and check the result.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AWS_NETWORK_FILES, normaliseAwsNetwork, parseAwsDescribeFile, type AwsNetworkPart } from '../../../shared/aws/network-reader.js';
import { AZURE_NETWORK_FILES, normaliseAzureNetwork, parseAzureListFile, type AzureNetworkPart } from '../../../shared/azure/network-reader.js';
import type { AwsCheckInput } from '../../../shared/core/network/aws-checks.js';
import { requiredAwsServices } from '../../../shared/core/network/aws-checks.js';
import type { AzureCheckInput } from '../../../shared/core/network/azure-checks.js';

export const FIXTURES = new URL('../../fixtures/network/', import.meta.url).pathname;

export type AwsRaw = Record<AwsNetworkPart, any[]>;
export type AzureRaw = Record<AzureNetworkPart, any[]>;

export function loadAwsRaw(name: string): AwsRaw {
  const raw = {} as AwsRaw;
  for (const part of Object.keys(AWS_NETWORK_FILES) as AwsNetworkPart[]) {
    raw[part] = parseAwsDescribeFile(part, readFileSync(join(FIXTURES, name, AWS_NETWORK_FILES[part].file), 'utf8'));
  }
  return raw;
}

export function loadAzureRaw(name: string): AzureRaw {
  const raw = {} as AzureRaw;
  for (const part of Object.keys(AZURE_NETWORK_FILES) as AzureNetworkPart[]) {
    raw[part] = parseAzureListFile(part, readFileSync(join(FIXTURES, name, AZURE_NETWORK_FILES[part].file), 'utf8'));
  }
  return raw;
}

export const clone = <T>(x: T): T => structuredClone(x);

export const awsModel = (raw: AwsRaw, region: string) => normaliseAwsNetwork(raw, region);
export const azureModel = (raw: AzureRaw, region: string) => normaliseAzureNetwork(raw, region);

/** Seed 002, example 1: worker VPC 10.0.0.0/16 (eu-west-1), repository VPC 11.0.0.0/16 (eu-central-1), appliance /32. */
export const EXAMPLE1 = {
  dir: 'aws-example1',
  workerVpcId: 'vpc-0a1f2e3d4c5b60001',
  repoVpcIds: ['vpc-0b2e3d4c5a6f70002'],
  input: {
    region: 'eu-west-1',
    workerSubnetId: 'subnet-0a1f2e3d4c5b61001',
    workerSecurityGroupIds: ['sg-0a1f2e3d4c5b62001'],
    repositoryVpcIds: ['vpc-0b2e3d4c5a6f70002'],
    applianceCidr: '172.31.5.10/32',
    services: requiredAwsServices({ kms: true }),
  } satisfies AwsCheckInput,
};

/** Seed 002, example 2: workers 12.0.0.0/16, standard repository 11.0.0.0/16, archive repository 13.0.0.0/16 (eu-north-1). */
export const EXAMPLE2 = {
  dir: 'aws-example2',
  workerVpcId: 'vpc-0d4e5f6a7b8c90012',
  repoVpcIds: ['vpc-0b2e3d4c5a6f70011', 'vpc-0e5f6a7b8c9d00013'],
  input: {
    region: 'eu-central-1',
    workerSubnetId: 'subnet-0d4e5f6a7b8c91012',
    workerSecurityGroupIds: ['sg-0d4e5f6a7b8c92012'],
    repositoryVpcIds: ['vpc-0b2e3d4c5a6f70011', 'vpc-0e5f6a7b8c9d00013'],
    applianceCidr: '172.31.5.10/32',
    services: requiredAwsServices({ kms: true }),
  } satisfies AwsCheckInput,
};

export const AZURE = {
  dir: 'azure-complete',
  input: {
    region: 'westeurope',
    workerSubnet: '/subscriptions/6f1c2d3e-4a5b-4c6d-8e7f-90a1b2c3d4e5/resourceGroups/tender-network/providers/Microsoft.Network/virtualNetworks/tender-workers-vnet/subnets/workers',
    deploymentId: 'tender',
  } satisfies AzureCheckInput,
  account: 'tenderweu7f3a',
};
