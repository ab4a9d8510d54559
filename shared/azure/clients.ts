// The parts of the Azure management clients Tender's adapters call, as
// structural types: the real ComputeManagementClient, NetworkManagementClient
// and StorageManagementClient fit them, and tests pass plain objects with the
// same method shapes. Long-running operations are typed PromiseLike so the
// SDK's pollers (which are thenables) and a mock's promises both fit.

import type {
  AccessUri,
  Disk,
  DiskAccess,
  GrantAccessData,
  Snapshot,
  VirtualMachine,
  VirtualMachineInstanceView,
  VirtualMachineRunCommand,
} from '@azure/arm-compute';
import type { NetworkInterface, PrivateDnsZoneGroup, PrivateEndpoint, PublicIPAddress, Subnet } from '@azure/arm-network';
import type { StorageAccount, StorageAccountCreateParameters, StorageAccountListKeysResult } from '@azure/arm-storage';
import type { TokenCredential } from '@azure/identity';

/** A long-running operation: awaiting it waits for the end; `submitted()` (SDK pollers) only for the first request. */
export type Lro<T> = PromiseLike<T> & { submitted?: () => Promise<void> };

export interface ComputeClientLike {
  virtualMachines: {
    get(resourceGroup: string, name: string, options?: { expand?: string }): Promise<VirtualMachine>;
    listAll(options?: unknown): AsyncIterable<VirtualMachine>;
    createOrUpdate(resourceGroup: string, name: string, parameters: VirtualMachine): Lro<VirtualMachine>;
    instanceView(resourceGroup: string, name: string): Promise<VirtualMachineInstanceView>;
    deallocate(resourceGroup: string, name: string): Lro<void>;
    delete(resourceGroup: string, name: string, options?: { forceDeletion?: boolean }): Lro<void>;
  };
  disks: {
    get(resourceGroup: string, name: string): Promise<Disk>;
    delete(resourceGroup: string, name: string): Lro<void>;
  };
  snapshots: {
    get(resourceGroup: string, name: string): Promise<Snapshot>;
    listByResourceGroup(resourceGroup: string): AsyncIterable<Snapshot>;
    createOrUpdate(resourceGroup: string, name: string, snapshot: Snapshot): Lro<Snapshot>;
    delete(resourceGroup: string, name: string): Lro<void>;
    grantAccess(resourceGroup: string, name: string, data: GrantAccessData): Lro<AccessUri>;
    revokeAccess(resourceGroup: string, name: string): Lro<void>;
  };
  diskAccesses: {
    listByResourceGroup(resourceGroup: string): AsyncIterable<DiskAccess>;
    createOrUpdate(resourceGroup: string, name: string, diskAccess: DiskAccess): Lro<DiskAccess>;
  };
  virtualMachineRunCommands: {
    createOrUpdate(resourceGroup: string, vmName: string, runCommandName: string, runCommand: VirtualMachineRunCommand): Lro<VirtualMachineRunCommand>;
    getByVirtualMachine(resourceGroup: string, vmName: string, runCommandName: string, options?: { expand?: string }): Promise<VirtualMachineRunCommand>;
  };
}

export interface NetworkClientLike {
  subnets: { get(resourceGroup: string, vnet: string, subnet: string): Promise<Subnet> };
  networkInterfaces: {
    get(resourceGroup: string, name: string): Promise<NetworkInterface>;
    beginCreateOrUpdateAndWait(resourceGroup: string, name: string, parameters: NetworkInterface): Promise<NetworkInterface>;
    beginDeleteAndWait(resourceGroup: string, name: string): Promise<void>;
  };
  publicIPAddresses: {
    beginCreateOrUpdateAndWait(resourceGroup: string, name: string, parameters: PublicIPAddress): Promise<PublicIPAddress>;
    beginDeleteAndWait(resourceGroup: string, name: string): Promise<void>;
  };
  privateEndpoints: {
    list(resourceGroup: string): AsyncIterable<PrivateEndpoint>;
    beginCreateOrUpdateAndWait(resourceGroup: string, name: string, parameters: PrivateEndpoint): Promise<PrivateEndpoint>;
  };
  privateDnsZoneGroups: {
    beginCreateOrUpdateAndWait(resourceGroup: string, privateEndpointName: string, groupName: string, parameters: PrivateDnsZoneGroup): Promise<unknown>;
  };
}

export interface StorageClientLike {
  storageAccounts: {
    listByResourceGroup(resourceGroup: string): AsyncIterable<StorageAccount>;
    beginCreateAndWait(resourceGroup: string, name: string, parameters: StorageAccountCreateParameters): Promise<StorageAccount>;
    listKeys(resourceGroup: string, name: string): Promise<StorageAccountListKeysResult>;
  };
}

export interface ArmClients {
  compute: ComputeClientLike;
  network: NetworkClientLike;
  storage: StorageClientLike;
}

/**
 * The management clients with the Function app's managed identity (or
 * whatever DefaultAzureCredential finds on a workstation). Loaded lazily so
 * tests and the local runner never load the ARM SDKs.
 */
export async function defaultArmClients(subscriptionId: string, credential?: TokenCredential): Promise<ArmClients & { credential: TokenCredential }> {
  const cred = credential ?? new (await import('@azure/identity')).DefaultAzureCredential();
  const { ComputeManagementClient } = await import('@azure/arm-compute');
  const { NetworkManagementClient } = await import('@azure/arm-network');
  const { StorageManagementClient } = await import('@azure/arm-storage');
  return {
    credential: cred,
    compute: new ComputeManagementClient(cred, subscriptionId) as unknown as ComputeClientLike,
    network: new NetworkManagementClient(cred, subscriptionId) as unknown as NetworkClientLike,
    storage: new StorageManagementClient(cred, subscriptionId) as unknown as StorageClientLike,
  };
}

/** Collects a paged listing. */
export async function all<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** Starts a long-running operation and returns once Azure accepted it, without waiting for the end. */
export async function started<T>(op: Lro<T>): Promise<void> {
  if (typeof op.submitted === 'function') {
    await op.submitted();
    return;
  }
  // A plain promise (a mock): its settling is the acceptance.
  await op;
}
