import { hash, randomBytes } from "node:crypto";
import { createRemoteJWKSet, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from "jose";
import type { KeyBudget, ResolvedConfig, ResolvedRoute, StaticKey } from "./config-types.js";
import type { Store, StoredKey } from "./store.js";
import { ipGroup } from "./client-ip.js";
import { TollgateError } from "./errors.js";

/** Who is calling, as gate 1 decided. */
export interface Identity {
  /** `app`: the app's own session said who it is (library mode, `identify`). */
  kind: "key" | "service" | "jwt" | "app" | "anonymous";
  /** End user: the key's user, the service key's x-tollgate-user, the JWT claim, or the IP group. */
  user: string;
  keyId: string | null;
  plan: string;
  verified: boolean;
  ip: string;
  ipGroup: string;
  /** The org whose budget the caller also spends (keys[].org, a JWT org_claim, a service key's x-tollgate-org). */
  org?: string;
  /** The key's own spend caps (keys[].budget). */
  keyBudget?: KeyBudget;
}

/** What the transport layer extracted from the request; nothing here is trusted yet. */
export interface Credentials {
  /** Bearer token or x-api-key. */
  token?: string;
  /** Why the credential sent cannot be used (another scheme, an empty Bearer): refused, never anonymous. */
  unusable?: string;
  /** x-tollgate-user / x-tollgate-plan: honoured only for service keys. */
  actAsUser?: string;
  actAsPlan?: string;
  /** x-tollgate-org: honoured only for service keys, and only for an org under orgs:. */
  actAsOrg?: string;
  /** Library mode: who the app's own session says is calling; outranks any token. */
  app?: AppIdentity;
}

/** What an app's `identify` returns: its own user, the plan it puts them on, whether they are verified. */
export interface AppIdentity {
  user: string;
  plan: string;
  verified?: boolean;
  /** The org (under orgs:) whose budget this user also spends. */
  org?: string;
}

/**
 * The credential a request carries: `Authorization: Bearer KEY`, else `x-api-key: KEY` (Anthropic's
 * SDKs). Credentials present but unusable (`Basic …`, an empty `Bearer`) come back as `unusable`,
 * so gate 1 refuses them instead of serving the caller as anonymous (SPEC §5.1). An empty header
 * is no credential. The message never repeats what was sent.
 */
export function readCredential(authorization: string | undefined, apiKey: string | undefined): Pick<Credentials, "token" | "unusable"> {
  // The common spelling, without the regex: "Bearer " and a token.
  if (authorization !== undefined && authorization.startsWith("Bearer ")) {
    const token = authorization.slice(7).trim();
    if (token) return { token };
  }
  const auth = authorization?.trim();
  const bearer = auth ? /^Bearer(?:\s+(.*))?$/i.exec(auth) : null;
  const token = bearer?.[1]?.trim();
  if (token) return { token };
  const key = apiKey?.trim();
  if (key) return { token: key };
  if (bearer) return { unusable: "the Authorization header carries an empty Bearer token" };
  if (auth) return { unusable: "the Authorization header must be Bearer KEY; other schemes are not accepted" };
  return {};
}

export const KEY_PREFIX = "tg_";

export function newKeySecret(): string {
  return KEY_PREFIX + randomBytes(24).toString("base64url");
}

export function hashKey(secret: string): string {
  // One-shot: no Hash object per request (a quarter of createHash's cost).
  return hash("sha256", secret, "hex");
}

type KeyRecord = Pick<StoredKey, "id" | "user" | "plan" | "service" | "grants" | "routes" | "verified" | "expiresAt" | "revokedAt"> & {
  org?: string;
  budget?: KeyBudget;
};

/**
 * How long a key hash the store does not know is answered from memory. A flood of one bad key
 * then costs a store lookup every few seconds instead of one per request. It cannot hide a key
 * created later (a new key is 192 random bits, so nobody sent it before it existed); its only
 * effect is that a key refused during a Redis outage (unknown to the local fallback) keeps being
 * refused for up to this long after Redis is back.
 */
export const UNKNOWN_KEY_TTL_MS = 5_000;
/** Revoked and expired keys never come back, so their refusal can be remembered longer. */
const DEAD_KEY_TTL_MS = 5 * 60_000;
/** Bound on remembered refusals: a flood of distinct random keys cannot grow memory. */
const MAX_REMEMBERED_REFUSALS = 10_000;

/**
 * Gate 1. Keys are looked up by their SHA-256, so no comparison ever runs over the secret itself
 * (constant time by construction), and the store never holds a usable key.
 */
export class Identifier {
  private readonly staticKeys = new Map<string, KeyRecord>();
  private readonly jwtKey?: Uint8Array | JWTVerifyGetKey;
  private readonly jwtAlgorithms: string[] = [];
  /** Hashes the store did not know, or knew as revoked/expired, until when that answer is trusted. */
  private readonly refused = new Map<string, { until: number; key?: KeyRecord }>();
  /** The last token hashed and its hash (one request's gate 1 may ask twice). */
  private lastToken = "";
  private lastHash = "";

  constructor(
    private readonly config: ResolvedConfig,
    private readonly store: Store,
  ) {
    for (const k of config.keys) this.staticKeys.set(hashKey(k.key), fromStatic(k));
    if (config.jwt?.secret) {
      this.jwtKey = new TextEncoder().encode(config.jwt.secret);
      // Pinned: a token cannot pick "none" or switch an HMAC secret into a public-key check.
      this.jwtAlgorithms = ["HS256"];
    } else if (config.jwt?.jwks) {
      this.jwtKey = createRemoteJWKSet(new URL(config.jwt.jwks));
      this.jwtAlgorithms = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"];
    }
  }

  async identify(creds: Credentials, route: ResolvedRoute, ip: string): Promise<Identity> {
    return this.identifyNow(creds, route, ip);
  }

  /**
   * identify(), synchronous when nothing needs waiting for (a config key, an unknown or dead key
   * remembered, an anonymous caller; a refusal is then thrown, not rejected): gate 1 then costs
   * no turn of the microtask queue.
   */
  identifyNow(creds: Credentials, route: ResolvedRoute, ip: string): Identity | Promise<Identity> {
    const group = ipGroup(ip);
    if (creds.app) {
      const { user, plan, verified, org } = creds.app;
      if (typeof user !== "string" || !user) throw new TollgateError("unauthorized", "identify() returned no user");
      if (!this.config.plans[plan] && plan !== "anonymous") throw new TollgateError("forbidden", `identify() named plan ${JSON.stringify(plan)}, which the config does not define`);
      if (!route.plans.includes(plan)) throw new TollgateError("forbidden", `plan ${plan} may not use route ${route.name}`);
      if (org !== undefined && !this.config.orgs[org]) throw new TollgateError("forbidden", `identify() named org ${JSON.stringify(org)}, which the config does not define`);
      return { kind: "app", user, keyId: null, plan, verified: verified === true, ip, ipGroup: group, org };
    }
    // After the app's own session, which may use Authorization for its own scheme.
    if (creds.unusable) throw new TollgateError("unauthorized", creds.unusable);
    if (!creds.token) {
      if (!route.plans.includes("anonymous")) throw NO_KEY;
      return { kind: "anonymous", user: group, keyId: null, plan: "anonymous", verified: false, ip, ipGroup: group };
    }
    if (this.jwtKey && looksLikeJwt(creds.token)) {
      return this.fromJwt(creds.token, ip, group).then((identity) => allowedOn(identity, route));
    }
    const hash = this.hashOf(creds.token);
    const known = this.knownKey(hash);
    if (known !== LOOKUP) return this.fromKey(known, creds, route, ip, group);
    return this.lookupKey(hash).then((key) => this.fromKey(key, creds, route, ip, group));
  }

  /**
   * The refusal gate 1 would give these credentials whatever else is true of the request, when
   * it needs no identity and no store: an unusable credential, none on a route without anonymous
   * access, or a key remembered as unknown, revoked or expired. Undefined: identify() decides.
   * A flood of one bad key is turned away from here before anything is built for it.
   */
  knownRefusal(creds: Credentials, route: ResolvedRoute): TollgateError | undefined {
    if (creds.app) return undefined;
    if (creds.unusable) return new TollgateError("unauthorized", creds.unusable);
    if (!creds.token) return route.plans.includes("anonymous") ? undefined : NO_KEY;
    if (this.jwtKey && looksLikeJwt(creds.token)) return undefined;
    const hash = this.hashOf(creds.token);
    if (this.staticKeys.has(hash)) return undefined;
    const seen = this.refused.get(hash);
    if (!seen || seen.until <= Date.now()) return undefined;
    return refusalOf(seen.key);
  }

  /**
   * The identity identify() gives these credentials without waiting and without refusing: a
   * config key's, an anonymous caller's. Undefined when it needs the store or a JWT check, or
   * refuses: identify() decides. For a refusal answered before an exchange is built.
   */
  knownIdentity(creds: Credentials, route: ResolvedRoute, ip: string): Identity | undefined {
    if (creds.app || creds.unusable) return undefined;
    if (creds.token && ((this.jwtKey && looksLikeJwt(creds.token)) || !this.staticKeys.has(this.hashOf(creds.token)))) return undefined;
    try {
      const identity = this.identifyNow(creds, route, ip);
      return identity instanceof Promise ? undefined : identity;
    } catch {
      return undefined;
    }
  }

  /** hashKey, once per request: knownRefusal and identify() see the same credentials one after the other. */
  private hashOf(token: string): string {
    if (token !== this.lastToken) {
      this.lastToken = token;
      this.lastHash = hashKey(token);
    }
    return this.lastHash;
  }

  private fromKey(key: KeyRecord | undefined, creds: Credentials, route: ResolvedRoute, ip: string, group: string): Identity {
    const dead = refusalOf(key);
    // (no key is always a refusal; the second test only tells the compiler)
    if (dead || !key) throw dead;
    if (key.routes && !key.routes.includes(route.name)) throw new TollgateError("forbidden", `this key may not use route ${route.name}`);
    let identity: Identity = { kind: "key", user: key.user ?? key.id, keyId: key.id, plan: key.plan, verified: key.verified, ip, ipGroup: group, org: key.org, keyBudget: key.budget };
    if (key.service && creds.actAsUser) {
      const plan = creds.actAsPlan ?? key.plan;
      if (!key.grants.includes(plan)) throw new TollgateError("forbidden", `this service key may not grant plan ${plan}`);
      identity = { ...identity, kind: "service", user: creds.actAsUser, plan, verified: false };
    }
    if (key.service && creds.actAsOrg !== undefined) {
      if (!this.config.orgs[creds.actAsOrg]) throw new TollgateError("forbidden", `unknown org ${JSON.stringify(creds.actAsOrg.slice(0, 64))}`);
      identity.org = creds.actAsOrg;
    }
    return allowedOn(identity, route);
  }

  /**
   * The key for a hash when no store lookup is needed: a config key, or a hash remembered as
   * unknown, revoked or expired. A live key is always read from the store, so a revocation by
   * the CLI (another process) or the admin API applies to the very next request; only unknown,
   * revoked and expired hashes, whose answer cannot turn into a yes, are remembered.
   */
  private knownKey(hash: string): KeyRecord | undefined | typeof LOOKUP {
    const key = this.staticKeys.get(hash);
    if (key) return key;
    const seen = this.refused.get(hash);
    if (seen) {
      if (seen.until > Date.now()) return seen.key;
      this.refused.delete(hash);
    }
    return LOOKUP;
  }

  private async lookupKey(hash: string): Promise<KeyRecord | undefined> {
    const stored = await this.store.findKey(hash);
    const now = Date.now();
    const dead = stored && ((stored.revokedAt !== undefined && stored.revokedAt !== null) || (stored.expiresAt !== undefined && stored.expiresAt !== null && stored.expiresAt <= now));
    if (!stored || dead) {
      if (this.refused.size >= MAX_REMEMBERED_REFUSALS) this.refused.delete(this.refused.keys().next().value!);
      this.refused.set(hash, { until: now + (dead ? DEAD_KEY_TTL_MS : UNKNOWN_KEY_TTL_MS), key: stored });
    }
    return stored;
  }

  private async fromJwt(token: string, ip: string, group: string): Promise<Identity> {
    const jwt = this.config.jwt!;
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.jwtKey as Uint8Array, {
        algorithms: this.jwtAlgorithms,
        issuer: jwt.issuer,
        audience: jwt.audience,
        requiredClaims: ["exp"],
      }));
    } catch {
      throw new TollgateError("unauthorized", "invalid or expired token");
    }
    const user = payload[jwt.user_claim];
    if (typeof user !== "string" || !user) throw new TollgateError("unauthorized", `the token has no ${jwt.user_claim} claim`);
    const claimed = payload[jwt.plan_claim];
    const plan = typeof claimed === "string" ? claimed : jwt.default_plan;
    if (!plan || (!this.config.plans[plan] && plan !== "anonymous")) throw new TollgateError("forbidden", "the token names no known plan");
    const org = jwt.org_claim ? payload[jwt.org_claim] : undefined;
    return {
      kind: "jwt",
      user,
      keyId: null,
      plan,
      verified: payload[jwt.verified_claim] === true,
      ip,
      ipGroup: group,
      // An org the config does not know has no budget to share: the caller is counted alone.
      org: typeof org === "string" && this.config.orgs[org] ? org : undefined,
    };
  }
}

/**
 * Refusals that say nothing about the request: one frozen instance each, so a flood of bad keys
 * builds no error (and the gateway renders each one's body once).
 */
const INVALID_KEY = Object.freeze(new TollgateError("unauthorized", "invalid API key"));
const REVOKED_KEY = Object.freeze(new TollgateError("unauthorized", "this API key was revoked"));
const EXPIRED_KEY = Object.freeze(new TollgateError("unauthorized", "this API key has expired"));
const NO_KEY = Object.freeze(new TollgateError("unauthorized", "this route needs an API key"));

/** Why a key (or none, for a hash nobody issued) cannot be used at all; undefined for a live key. */
function refusalOf(key: KeyRecord | undefined): TollgateError | undefined {
  if (!key) return INVALID_KEY;
  if (key.revokedAt !== undefined && key.revokedAt !== null) return REVOKED_KEY;
  if (key.expiresAt !== undefined && key.expiresAt !== null && key.expiresAt <= Date.now()) return EXPIRED_KEY;
  return undefined;
}

/** Marks a hash only the store can answer for. */
const LOOKUP = Symbol("lookup");

function allowedOn(identity: Identity, route: ResolvedRoute): Identity {
  if (!route.plans.includes(identity.plan)) throw new TollgateError("forbidden", `plan ${identity.plan} may not use route ${route.name}`);
  return identity;
}

function fromStatic(k: StaticKey): KeyRecord {
  return { id: k.id, user: k.user, plan: k.plan, service: k.service, grants: k.grants, routes: k.routes, verified: k.verified, expiresAt: k.expiresAt, org: k.org, budget: k.budget };
}

function looksLikeJwt(token: string): boolean {
  return token.split(".").length === 3 && token.startsWith("ey");
}
