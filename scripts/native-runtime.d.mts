export function nativeRuntimeFiles(root: string, opts?: { codecThreads?: boolean }): string[];
