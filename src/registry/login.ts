import type { RegistryConfig } from '../config.js';
import { invalidArgument } from '../errors.js';
import { parseReference } from '../image/reference.js';
import { CredentialStore, type Credentials } from './credentials.js';
import { RegistryClient } from './registry-client.js';
import { registryEndpoints } from './registry-endpoint.js';
import { describe } from './pull-image.js';

/** `docker login SERVER` names a registry host; Docker Hub by default (its legacy URL forms too). */
export function registryHost(server: string | undefined): string {
  if (server === undefined || server === '') return 'docker.io';
  const host = server.replace(/^[a-z]+:\/\//, '').replace(/\/.*$/, '');
  if (host === 'index.docker.io' || host === 'registry-1.docker.io' || host === 'docker.io') return 'docker.io';
  try {
    parseReference(`${host}/x`);
  } catch {
    throw invalidArgument(`invalid registry address ${JSON.stringify(server)}`);
  }
  return host;
}

/** Check the credentials against the registry, then store them (Docker's `auths` format). Returns the host. */
export async function login(cfg: RegistryConfig, server: string | undefined, c: Credentials, store = new CredentialStore()): Promise<string> {
  const host = registryHost(server);
  if (c.username === '') throw invalidArgument('username is required');
  if (c.password === '') throw invalidArgument('password is required');
  const ep = registryEndpoints(host, cfg).find((e) => !e.mirror)!;
  try {
    await new RegistryClient(ep, '', store, 'pull', c).verifyCredentials();
  } catch (e) {
    throw describe(e, `login to ${host}`);
  }
  await store.set(host, c);
  return host;
}

/** Forget the registry's credentials in strata's config; returns whether there were any. */
export async function logout(server: string | undefined, store = new CredentialStore()): Promise<{ host: string; removed: boolean }> {
  const host = registryHost(server);
  return { host, removed: await store.remove(host) };
}
