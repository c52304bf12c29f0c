// Tests of the Helm chart helm/llmserve, without a cluster: helm lint --strict; helm template
// with each value set of tests/helm/values/; every rendered object validated against its
// Kubernetes (kubernetes-models) or Prometheus operator schema; assertions on what the
// objects say (probes, resources, security context, images, GPUs, NetworkPolicy, the
// router's pools, the PrometheusRule against deploy/prometheus/alerts.yml and promtool);
// values the schema must refuse refused; yamllint on the chart's own YAML; NOTES.txt.
//
// The tools come from tools/install-deps.sh: helm and the npm packages under
// $LLMSERVE_TOOLS (default /opt/llmserve-tools), yamllint and promtool from Debian.
// A missing tool fails the test.
//
// Usage: node tests/helm/test_chart.mjs        (exit 0 when every check passed)

import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import assert from 'node:assert/strict';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const chart = path.join(root, 'helm', 'llmserve');
const tools = process.env.LLMSERVE_TOOLS || '/opt/llmserve-tools';
const helm = path.join(tools, 'bin', 'helm');
const modules = path.join(tools, 'node_modules');

let passed = 0;
let failed = 0;
function check(name, fn) {
  try {
    fn();
    passed++;
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}\n  ${String(e.message).split('\n').join('\n  ')}`);
  }
}

function need(file, what) {
  if (!fs.existsSync(file)) {
    console.log(`FAIL ${what} is missing (${file}): run tools/install-deps.sh`);
    console.log(`0 passed, 1 failed`);
    process.exit(1);
  }
}
need(helm, 'helm');
need(path.join(modules, 'kubernetes-models'), 'npm kubernetes-models');
need(path.join(modules, '@kubernetes-models', 'prometheus-operator'), 'npm @kubernetes-models/prometheus-operator');
need(path.join(modules, 'yaml'), 'npm yaml');
for (const tool of ['yamllint', 'promtool']) {
  if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) {
    console.log(`FAIL ${tool} is missing: run tools/install-deps.sh`);
    console.log(`0 passed, 1 failed`);
    process.exit(1);
  }
}

const mod = (p) => import(pathToFileURL(path.join(modules, p)).href);
const YAML = await mod('yaml/dist/index.js');

// apiVersion -> module of its classes
const groups = {
  'v1': 'kubernetes-models/v1/index.js',
  'apps/v1': 'kubernetes-models/apps/v1/index.js',
  'policy/v1': 'kubernetes-models/policy/v1/index.js',
  'autoscaling/v2': 'kubernetes-models/autoscaling/v2/index.js',
  'networking.k8s.io/v1': 'kubernetes-models/networking.k8s.io/v1/index.js',
  'monitoring.coreos.com/v1': '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/index.js',
};
const classes = {};
for (const [api, file] of Object.entries(groups)) classes[api] = await mod(file);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'llmserve-helm-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', ...opts });
  return { status: r.status, out: r.stdout || '', err: (r.stderr || '').split('\n')
    .filter((l) => !/found symbolic link in path/.test(l)).join('\n') };
}
function template(args) {
  return run(helm, ['template', 'rel', chart, '--namespace', 'llm', ...args]);
}

const chartMeta = YAML.parse(fs.readFileSync(path.join(chart, 'Chart.yaml'), 'utf8'));
const appVersion = chartMeta.appVersion;
const alertsFile = path.join(root, 'deploy', 'prometheus', 'alerts.yml');

// ---- lint -------------------------------------------------------------------------------
check('helm lint --strict', () => {
  const r = run(helm, ['lint', '--strict', chart]);
  assert.equal(r.status, 0, r.out + r.err);
});

check('yamllint on Chart.yaml, values.yaml and the test value sets', () => {
  const files = [path.join(chart, 'Chart.yaml'), path.join(chart, 'values.yaml'),
    ...fs.readdirSync(path.join(here, 'values')).map((f) => path.join(here, 'values', f))];
  const r = run('yamllint', ['--strict', '-c', path.join(here, 'yamllint.yml'), ...files]);
  assert.equal(r.status, 0, r.out + r.err);
});

check('files/alerts.yml is the one source: a link to deploy/prometheus/alerts.yml', () => {
  const link = path.join(chart, 'files', 'alerts.yml');
  assert.ok(fs.lstatSync(link).isSymbolicLink(), 'files/alerts.yml is not a symbolic link');
  assert.equal(fs.realpathSync(link), fs.realpathSync(alertsFile));
});

check('helm package carries the alert rules', () => {
  const r = run(helm, ['package', chart, '--destination', tmp]);
  assert.equal(r.status, 0, r.out + r.err);
  const tgz = path.join(tmp, `llmserve-${chartMeta.version}.tgz`);
  const inside = execFileSync('tar', ['-xzOf', tgz, 'llmserve/files/alerts.yml'], { encoding: 'utf8' });
  assert.equal(inside, fs.readFileSync(alertsFile, 'utf8'));
});

// ---- helpers on rendered objects ----------------------------------------------------------
const componentPorts = { router: 50051, cache: 50052, metrics: 9465, inference: 50061 };
const components = new Set(['router', 'cache', 'metrics', 'inference', 'memcached']);
const llmserveImage = /^ghcr\.io\/llmserve\/llmserve:/;

function matches(selector, labels) {
  return Object.entries(selector || {}).every(([k, v]) => labels && labels[k] === v);
}
function podsOf(objs) {
  return objs.filter((o) => o.kind === 'Deployment');
}
function containersOf(dep) {
  const s = dep.spec.template.spec;
  return [...(s.initContainers || []), ...s.containers];
}
function configOf(objs, dep) {
  const env = {};
  for (const c of dep.spec.template.spec.containers) {
    for (const ef of c.envFrom || []) {
      const cm = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name === ef.configMapRef.name);
      assert.ok(cm, `${dep.metadata.name}: envFrom ConfigMap ${ef.configMapRef.name} is not rendered`);
      Object.assign(env, cm.data);
    }
    for (const e of c.env || []) if ('value' in e) env[e.name] = e.value;
  }
  return env;
}
function byName(objs, kind, name) {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  assert.ok(o, `no ${kind} ${name}`);
  return o;
}

function render(valuesFile) {
  const r = template(['-f', valuesFile]);
  assert.equal(r.status, 0, `helm template failed:\n${r.err}`);
  return YAML.parseAllDocuments(r.out).map((d) => d.toJSON()).filter((o) => o);
}

// What every value set must satisfy.
function common(objs, values) {
  check(`${values.name}: every object valid against its schema`, () => {
    for (const o of objs) {
      const mod = classes[o.apiVersion];
      assert.ok(mod && mod[o.kind], `${o.apiVersion} ${o.kind} ${o.metadata?.name}: no schema known`);
      try {
        new mod[o.kind](o).validate();
      } catch (e) {
        throw new Error(`${o.kind} ${o.metadata.name}: ${e.message}`);
      }
    }
  });

  check(`${values.name}: standard labels on every object and pod`, () => {
    for (const o of objs) {
      const sets = [o.metadata.labels];
      if (o.kind === 'Deployment') sets.push(o.spec.template.metadata.labels);
      for (const l of sets) {
        for (const k of ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/version',
          'app.kubernetes.io/part-of', 'app.kubernetes.io/managed-by', 'helm.sh/chart'])
          assert.ok(l && l[k], `${o.kind} ${o.metadata.name}: no label ${k}`);
        assert.equal(l['app.kubernetes.io/instance'], 'rel');
        assert.equal(l['app.kubernetes.io/version'], appVersion);
        const comp = l['app.kubernetes.io/component'];
        if (o.kind !== 'ConfigMap' && o.kind !== 'Secret')
          assert.ok(components.has(comp), `${o.kind} ${o.metadata.name}: component '${comp}'`);
        if (comp === 'inference' && o.kind !== 'NetworkPolicy') {
          assert.ok(l['llmserve.io/pool'], `${o.kind} ${o.metadata.name}: no llmserve.io/pool`);
          assert.ok(l['llmserve.io/version'], `${o.kind} ${o.metadata.name}: no llmserve.io/version`);
        }
      }
    }
  });

  check(`${values.name}: every container has resources and the restricted security context`, () => {
    for (const dep of podsOf(objs)) {
      const ps = dep.spec.template.spec.securityContext || {};
      assert.equal(ps.runAsNonRoot, true, `${dep.metadata.name}: pod runAsNonRoot`);
      assert.equal(ps.seccompProfile?.type, 'RuntimeDefault', `${dep.metadata.name}: pod seccomp`);
      assert.equal(dep.spec.template.spec.automountServiceAccountToken, false);
      for (const c of containersOf(dep)) {
        const n = `${dep.metadata.name}/${c.name}`;
        assert.ok(c.resources?.requests?.cpu && c.resources?.requests?.memory, `${n}: requests`);
        assert.ok(c.resources?.limits?.cpu && c.resources?.limits?.memory, `${n}: limits`);
        const sc = c.securityContext || {};
        assert.equal(sc.runAsNonRoot, true, `${n}: runAsNonRoot`);
        assert.equal(sc.readOnlyRootFilesystem, true, `${n}: readOnlyRootFilesystem`);
        assert.equal(sc.allowPrivilegeEscalation, false, `${n}: allowPrivilegeEscalation`);
        assert.ok((sc.capabilities?.drop || []).includes('ALL'), `${n}: capabilities not dropped`);
        assert.equal(sc.seccompProfile?.type, 'RuntimeDefault', `${n}: seccomp`);
        assert.notEqual(sc.privileged, true, `${n}: privileged`);
      }
    }
  });

  check(`${values.name}: images pinned (a tag, never latest); llmserve at appVersion, -cuda only with GPUs`, () => {
    for (const dep of podsOf(objs)) {
      for (const c of containersOf(dep)) {
        const m = /^(.+\/)?[^/:@]+(:([^:/@]+))?(@sha256:[0-9a-f]{64})?$/.exec(c.image);
        assert.ok(m, `${c.image}: not an image reference`);
        assert.ok(m[3] || m[4], `${dep.metadata.name}/${c.name}: image ${c.image} has no tag`);
        assert.notEqual(m[3], 'latest', `${dep.metadata.name}/${c.name}: image ${c.image}`);
        assert.ok(!/latest/.test(m[3] || ''), `${c.image}`);
        if (llmserveImage.test(c.image)) {
          const gpus = Number(dep.spec.template.spec.containers[0].resources.limits['nvidia.com/gpu'] || 0);
          const want = gpus > 0 && c.name === 'inference' ? `${appVersion}-cuda` : appVersion;
          assert.equal(m[3], want, `${dep.metadata.name}/${c.name}: ${c.image}`);
        }
      }
    }
  });

  check(`${values.name}: probes on grpc.health.v1 at each service's port`, () => {
    for (const dep of podsOf(objs)) {
      const comp = dep.metadata.labels['app.kubernetes.io/component'];
      const c = dep.spec.template.spec.containers[0];
      if (comp === 'memcached') {
        assert.ok(c.livenessProbe?.tcpSocket && c.readinessProbe?.tcpSocket, `${dep.metadata.name}: memcached probes`);
        continue;
      }
      const port = componentPorts[comp];
      const grpcPort = c.ports.find((p) => p.name === 'grpc');
      assert.equal(grpcPort?.containerPort, port, `${dep.metadata.name}: grpc port`);
      for (const kind of ['startupProbe', 'livenessProbe', 'readinessProbe']) {
        const p = c[kind];
        assert.ok(p, `${dep.metadata.name}: no ${kind}`);
        if (values.tls && comp === 'metrics') {
          assert.equal(p.httpGet?.port, 9464, `${dep.metadata.name}: ${kind} with TLS is not HTTP on 9464`);
          assert.equal(p.httpGet.path, '/healthz');
        } else if (values.tls) {
          assert.equal(p.tcpSocket?.port, port, `${dep.metadata.name}: ${kind} with TLS is not tcpSocket:${port}`);
          assert.ok(!p.grpc, `${dep.metadata.name}: gRPC probe against a TLS listener`);
        } else {
          assert.equal(p.grpc?.port, port, `${dep.metadata.name}: ${kind} is not grpc:${port}`);
          assert.equal(p.grpc.service ?? '', '', `${dep.metadata.name}: ${kind} service name`);
        }
      }
      const env = configOf(objs, dep);
      const svc = comp.toUpperCase();
      assert.equal(env[`LLMSERVE_${svc}_LISTEN`], `0.0.0.0:${port}`, `${dep.metadata.name}: listen`);
      const grace = Number(env[`LLMSERVE_${svc}_GRACE_MS`]);
      assert.ok(grace > 0, `${dep.metadata.name}: no grace-ms`);
      assert.ok(dep.spec.template.spec.terminationGracePeriodSeconds * 1000 >= grace + 2000 + 1000,
        `${dep.metadata.name}: terminationGracePeriodSeconds ${dep.spec.template.spec.terminationGracePeriodSeconds} not above grace-ms ${grace} + Consul's 2 s`);
    }
  });

  check(`${values.name}: nvidia.com/gpu only where a pool asks for GPUs, requests equal to limits`, () => {
    const want = {};
    for (const pool of values.pools) for (const v of pool.versions) want[`rel-llmserve-inference-${pool.name}-${v.name}`] = v.gpus || 0;
    for (const dep of podsOf(objs)) {
      for (const c of containersOf(dep)) {
        const lim = c.resources.limits['nvidia.com/gpu'];
        const req = c.resources.requests['nvidia.com/gpu'];
        const expect = c.name === 'inference' ? want[dep.metadata.name] : 0;
        if (expect === 0) {
          assert.ok(!('nvidia.com/gpu' in c.resources.limits) && !('nvidia.com/gpu' in (c.resources.requests || {})),
            `${dep.metadata.name}/${c.name}: nvidia.com/gpu without GPUs asked`);
        }
        assert.equal(Number(lim || 0), expect, `${dep.metadata.name}/${c.name}: nvidia.com/gpu limit ${lim}, expected ${expect}`);
        assert.equal(Number(req || 0), Number(lim || 0), `${dep.metadata.name}/${c.name}: GPU request differs from limit`);
        if (c.name === 'inference') {
          const env = configOf(objs, dep);
          assert.equal(env.LLMSERVE_INFERENCE_BACKEND, expect > 0 ? 'cuda' : 'cpu', `${dep.metadata.name}: backend`);
        }
      }
    }
    for (const name of Object.keys(want)) assert.ok(objs.find((o) => o.kind === 'Deployment' && o.metadata.name === name), `no Deployment ${name}`);
  });

  check(`${values.name}: inference Deployments per pool version with pool, version, weight and model`, () => {
    for (const pool of values.pools) {
      for (const v of pool.versions) {
        const name = `rel-llmserve-inference-${pool.name}-${v.name}`;
        const dep = byName(objs, 'Deployment', name);
        const l = dep.spec.template.metadata.labels;
        assert.equal(l['llmserve.io/pool'], pool.name);
        assert.equal(l['llmserve.io/version'], v.name);
        const env = configOf(objs, dep);
        assert.equal(env.LLMSERVE_INFERENCE_POOL, pool.name);
        assert.equal(env.LLMSERVE_INFERENCE_MODEL_VERSION, v.name);
        assert.equal(env.LLMSERVE_INFERENCE_WEIGHT, v.weight === undefined ? undefined : String(v.weight), `${name}: weight`);
        const mounts = dep.spec.template.spec.containers[0].volumeMounts;
        const models = mounts.find((m) => m.name === 'models');
        assert.ok(models && models.readOnly, `${name}: /models not mounted read-only`);
        assert.ok(env.LLMSERVE_INFERENCE_MODEL.startsWith(models.mountPath + '/'), `${name}: model ${env.LLMSERVE_INFERENCE_MODEL}`);
        assert.ok(env.LLMSERVE_INFERENCE_TOKENIZER.startsWith(models.mountPath + '/'), `${name}: tokenizer`);
        const vol = dep.spec.template.spec.volumes.find((x) => x.name === 'models');
        if (v.source === 'pvc') {
          assert.equal(vol.persistentVolumeClaim?.claimName, v.claimName, `${name}: claim`);
        } else {
          assert.ok(vol.emptyDir, `${name}: models volume`);
          const init = dep.spec.template.spec.initContainers?.[0];
          assert.ok(init, `${name}: no init container fills /models`);
          const cmd = init.command.join(' ');
          assert.ok(cmd.includes(env.LLMSERVE_INFERENCE_MODEL) || cmd.includes(' /models/'), `${name}: init ${cmd}`);
          if (v.source === 'generate') assert.match(cmd, /^\/usr\/local\/bin\/llmserve-modelmaker /);
        }
        if (v.replicas !== undefined && !v.hpa) assert.equal(dep.spec.replicas, v.replicas, `${name}: replicas`);
      }
    }
  });

  check(`${values.name}: each Service selects exactly one Deployment and a named container port`, () => {
    for (const s of objs.filter((o) => o.kind === 'Service')) {
      const deps = podsOf(objs).filter((d) => matches(s.spec.selector, d.spec.template.metadata.labels));
      assert.equal(deps.length, 1, `Service ${s.metadata.name} selects ${deps.map((d) => d.metadata.name)}`);
      for (const p of s.spec.ports) {
        assert.ok(deps[0].spec.template.spec.containers[0].ports.find((cp) => cp.name === p.targetPort),
          `Service ${s.metadata.name}: targetPort ${p.targetPort}`);
      }
    }
  });

  check(`${values.name}: HPAs and PDBs aim at rendered Deployments; no fixed replicas under an HPA`, () => {
    for (const h of objs.filter((o) => o.kind === 'HorizontalPodAutoscaler')) {
      const dep = byName(objs, 'Deployment', h.spec.scaleTargetRef.name);
      assert.equal(dep.spec.replicas, undefined, `${dep.metadata.name}: replicas fixed under an HPA`);
    }
    for (const p of objs.filter((o) => o.kind === 'PodDisruptionBudget')) {
      const deps = podsOf(objs).filter((d) => matches(p.spec.selector.matchLabels, d.spec.template.metadata.labels));
      assert.equal(deps.length, 1, `PDB ${p.metadata.name} selects ${deps.length} Deployments`);
    }
    const router = byName(objs, 'Deployment', 'rel-llmserve-router');
    assert.ok(objs.find((o) => o.kind === 'HorizontalPodAutoscaler' && o.spec.scaleTargetRef.name === router.metadata.name), 'no router HPA');
    assert.ok(objs.find((o) => o.kind === 'PodDisruptionBudget' && o.metadata.name === router.metadata.name), 'no router PDB');
  });

  check(`${values.name}: NetworkPolicy: router open, internal services from the release only, metrics HTTP from Prometheus`, () => {
    const pols = objs.filter((o) => o.kind === 'NetworkPolicy');
    const release = { 'app.kubernetes.io/name': 'llmserve', 'app.kubernetes.io/instance': 'rel' };
    for (const dep of podsOf(objs)) {
      const labels = dep.spec.template.metadata.labels;
      const comp = labels['app.kubernetes.io/component'];
      const mine = pols.filter((p) => matches(p.spec.podSelector.matchLabels, labels));
      assert.equal(mine.length, 1, `${dep.metadata.name}: selected by ${mine.length} policies`);
      const pol = mine[0];
      assert.deepEqual(pol.spec.policyTypes, ['Ingress']);
      const rules = pol.spec.ingress;
      if (comp === 'router') {
        assert.equal(rules.length, 1);
        assert.deepEqual(rules[0].ports.map((p) => p.port), [50051]);
        assert.equal(rules[0].from, undefined, 'router policy restricts its clients by default');
        // nothing but the router selected by the router policy
        for (const other of podsOf(objs)) if (other !== dep && other.metadata.labels['app.kubernetes.io/component'] !== 'router')
          assert.ok(!matches(pol.spec.podSelector.matchLabels, other.spec.template.metadata.labels));
        continue;
      }
      const svcPort = comp === 'memcached' ? 11211 : componentPorts[comp];
      const grpcRule = rules.find((r) => r.ports.some((p) => p.port === svcPort));
      assert.ok(grpcRule, `${dep.metadata.name}: no rule for port ${svcPort}`);
      assert.ok(grpcRule.from && grpcRule.from.length > 0, `${dep.metadata.name}: port ${svcPort} open to anyone`);
      for (const f of grpcRule.from) {
        if (f.ipBlock) { assert.ok(values.extraFrom, `${dep.metadata.name}: unexpected ipBlock`); continue; }
        assert.equal(f.namespaceSelector, undefined, `${dep.metadata.name}: peers from other namespaces`);
        if (comp === 'memcached') assert.equal(f.podSelector.matchLabels['app.kubernetes.io/component'], 'cache');
        else assert.deepEqual(f.podSelector.matchLabels, release, `${dep.metadata.name}: peers ${JSON.stringify(f)}`);
      }
      if (comp === 'metrics') {
        const http = rules.find((r) => r.ports.some((p) => p.port === 9464));
        assert.ok(http, 'no rule for the metrics HTTP port');
        assert.equal(http.from.length, 1);
        assert.deepEqual(http.from[0].namespaceSelector.matchLabels, { 'kubernetes.io/metadata.name': 'monitoring' });
        assert.ok(!grpcRule.ports.some((p) => p.port === 9464), 'metrics HTTP open to the release rule');
      } else {
        assert.equal(rules.length, 1, `${dep.metadata.name}: ${rules.length} rules`);
      }
    }
  });

  check(`${values.name}: the router finds the pools and the cache`, () => {
    const router = byName(objs, 'Deployment', 'rel-llmserve-router');
    const env = configOf(objs, router);
    // Without Consul the inference and cache Services are headless, so that their names
    // resolve to every ready pod (DNS discovery); with Consul they keep a ClusterIP.
    for (const s of objs.filter((o) => o.kind === 'Service')) {
      const comp = s.metadata.labels['app.kubernetes.io/component'];
      const headless = !values.consul && (comp === 'inference' || comp === 'cache');
      assert.equal(s.spec.clusterIP, headless ? 'None' : undefined, `${s.metadata.name}: clusterIP`);
    }
    if (values.consul) {
      assert.equal(env.LLMSERVE_ROUTER_DISCOVERY, 'consul');
      assert.equal(env.LLMSERVE_ROUTER_POOL, undefined);
      assert.equal(env.LLMSERVE_ROUTER_CACHE, undefined);
      assert.equal(env.LLMSERVE_ROUTER_DNS_REFRESH_MS, undefined);
      return;
    }
    assert.equal(env.LLMSERVE_ROUTER_DISCOVERY, 'dns');
    assert.equal(env.LLMSERVE_ROUTER_DNS_REFRESH_MS, '5000');
    const got = env.LLMSERVE_ROUTER_POOL.split(';').sort();
    const want = [];
    for (const pool of values.pools) for (const v of pool.versions)
      want.push(`${pool.name}@${v.name}${v.weight === undefined ? '' : ':' + v.weight}=rel-llmserve-inference-${pool.name}-${v.name}:50061`);
    assert.deepEqual(got, want.sort());
    for (const entry of got) {
      const [host, port] = entry.split('=')[1].split(':');
      const s = byName(objs, 'Service', host);
      assert.ok(s.spec.ports.some((p) => p.port === Number(port)), `${host}: no port ${port}`);
    }
    // the policy's pools exist
    const pools = new Set(values.pools.map((p) => p.name));
    assert.ok(pools.has(env.LLMSERVE_ROUTER_DEFAULT_POOL), `default pool ${env.LLMSERVE_ROUTER_DEFAULT_POOL}`);
    for (const t of (env.LLMSERVE_ROUTER_TIERS || '').split(',').filter(Boolean)) assert.ok(pools.has(t.split('=')[0]), `tier ${t}`);
    const [ch, cp] = env.LLMSERVE_ROUTER_CACHE.split(':');
    assert.ok(byName(objs, 'Service', ch).spec.ports.some((p) => p.port === Number(cp)));
    for (const dep of podsOf(objs)) {
      const comp = dep.metadata.labels['app.kubernetes.io/component'];
      if (comp === 'memcached' || comp === 'metrics') continue;
      assert.equal(configOf(objs, dep)[`LLMSERVE_${comp.toUpperCase()}_METRICS`], 'rel-llmserve-metrics:9465', `${dep.metadata.name}: metrics address`);
    }
  });
}

function poolsFrom(v) {
  const d = { replicas: 1, gpus: 0, source: 'generate' };
  const pools = v?.inference?.pools || [{ name: 'small' }, { name: 'large' }];
  return pools.map((p) => {
    const base = { ...d, ...p, ...(p.model || {}), hpa: !!p.autoscaling?.enabled };
    const versions = (p.versions || [{ name: 'v1' }]).map((ver) => ({ ...base, ...ver, ...(ver.model || {}) }));
    return { name: p.name, versions };
  });
}

const sets = {};
for (const f of fs.readdirSync(path.join(here, 'values')).sort()) {
  const file = path.join(here, 'values', f);
  const v = YAML.parse(fs.readFileSync(file, 'utf8')) || {};
  const values = { name: f.replace(/\.yaml$/, ''), pools: poolsFrom(v), tls: !!v.tls?.enabled,
    consul: !!v.consul?.enabled, extraFrom: !!v.networkPolicy?.internalFrom?.length };
  let objs;
  check(`${values.name}: helm template`, () => { objs = render(file); });
  if (!objs) continue;
  sets[values.name] = objs;
  common(objs, values);
}
check('every value set rendered', () => {
  for (const n of ['defaults', 'tls-apikeys', 'gpu-canary', 'external-memcached', 'consul', 'tracing'])
    assert.ok(sets[n], `value set ${n} did not render`);
});

// ---- what particular value sets must show ------------------------------------------------
check('defaults: memcached in the chart, no tracing, no Prometheus operator objects', () => {
  const objs = sets.defaults;
  const cache = byName(objs, 'Deployment', 'rel-llmserve-cache');
  assert.equal(configOf(objs, cache).LIBMEMCACHED, '--SERVER=rel-llmserve-memcached:11211');
  byName(objs, 'Deployment', 'rel-llmserve-memcached');
  assert.equal(byName(objs, 'ConfigMap', 'rel-llmserve-common').data.OTEL_SDK_DISABLED, 'true');
  assert.ok(!objs.some((o) => o.apiVersion.startsWith('monitoring.coreos.com')));
  assert.ok(!objs.some((o) => o.kind === 'Secret'));
});

check('tls-apikeys: TLS files, mutual TLS inside, API keys on the router only', () => {
  const objs = sets['tls-apikeys'];
  for (const dep of podsOf(objs)) {
    const comp = dep.metadata.labels['app.kubernetes.io/component'];
    if (comp === 'memcached') continue;
    const svc = comp.toUpperCase();
    const env = configOf(objs, dep);
    const vol = dep.spec.template.spec.volumes.find((v) => v.name === 'tls');
    assert.equal(vol?.secret?.secretName, 'llmserve-certs', `${dep.metadata.name}: TLS Secret`);
    const mount = dep.spec.template.spec.containers[0].volumeMounts.find((m) => m.name === 'tls');
    for (const k of ['TLS_CERT', 'TLS_KEY', 'UPSTREAM_TLS_CA'])
      assert.ok(env[`LLMSERVE_${svc}_${k}`]?.startsWith(mount.mountPath + '/'), `${dep.metadata.name}: ${k}`);
    assert.equal(env[`LLMSERVE_${svc}_UPSTREAM_TLS_SERVER_NAME`], 'llmserve.internal');
    if (comp === 'router') {
      assert.equal(env.LLMSERVE_ROUTER_TLS_CLIENT_CA, undefined, 'router requires client certificates of users');
      assert.ok(env.LLMSERVE_ROUTER_UPSTREAM_TLS_CERT && env.LLMSERVE_ROUTER_UPSTREAM_TLS_KEY);
      const keys = dep.spec.template.spec.volumes.find((v) => v.name === 'api-keys');
      const km = dep.spec.template.spec.containers[0].volumeMounts.find((m) => m.name === 'api-keys');
      assert.equal(env.LLMSERVE_ROUTER_API_KEYS, `${km.mountPath}/api-keys`);
      const secret = byName(objs, 'Secret', keys.secret.secretName);
      const lines = secret.stringData['api-keys'].trim().split('\n').map((l) => l.trim());
      assert.deepEqual(lines, ['6bd1c0f0a7c84b1b9f0e2d4c1a7e5f3b', '0f5e2a9c41d84b6e8c7a3d2b1e9f6a4c acme']);
    } else {
      assert.ok(env[`LLMSERVE_${svc}_TLS_CLIENT_CA`], `${dep.metadata.name}: no client CA with mutual TLS`);
      assert.equal(env[`LLMSERVE_${svc}_API_KEYS`], undefined);
      assert.ok(!dep.spec.template.spec.volumes.some((v) => v.name === 'api-keys'), `${dep.metadata.name}: API keys mounted`);
    }
  }
  assert.equal(byName(objs, 'Service', 'rel-llmserve-router').spec.type, 'LoadBalancer');
  for (const s of objs.filter((o) => o.kind === 'Service' && o.metadata.name !== 'rel-llmserve-router'))
    assert.equal(s.spec.type, 'ClusterIP', `${s.metadata.name} exposed`);
});

check('gpu-canary: 95/5 versions, GPU node placement, CUDA image, HPA on the CPU pool', () => {
  const objs = sets['gpu-canary'];
  const v1 = byName(objs, 'Deployment', 'rel-llmserve-inference-large-v1');
  const v2 = byName(objs, 'Deployment', 'rel-llmserve-inference-large-v2');
  assert.equal(v1.spec.replicas, 3);
  assert.equal(v2.spec.replicas, 1);
  for (const d of [v1, v2]) {
    const s = d.spec.template.spec;
    assert.deepEqual(s.nodeSelector, { 'nvidia.com/gpu.present': 'true' });
    assert.equal(s.tolerations[0].key, 'nvidia.com/gpu');
    assert.equal(s.containers[0].resources.limits['nvidia.com/gpu'], 1);
    assert.equal(configOf(objs, d).LLMSERVE_INFERENCE_MAX_BATCH, '64');
  }
  const init = v2.spec.template.spec.initContainers[0];
  assert.equal(init.image, 'registry.example.com/llmserve-models/large:v2');
  assert.deepEqual(init.command, ['cp', '/model/model.bin', '/model/tokenizer.bin', '/models/']);
  const small = byName(objs, 'Deployment', 'rel-llmserve-inference-small-v1');
  assert.equal(small.spec.template.spec.nodeSelector, undefined);
  assert.ok(objs.some((o) => o.kind === 'HorizontalPodAutoscaler' && o.spec.scaleTargetRef.name === small.metadata.name
    && o.spec.minReplicas === 2 && o.spec.maxReplicas === 6));
  assert.equal(configOf(objs, byName(objs, 'Deployment', 'rel-llmserve-router')).LLMSERVE_ROUTER_MAX_RETRIES, '2');
});

check('external-memcached: no memcached of ours, the cache given both servers', () => {
  const objs = sets['external-memcached'];
  assert.ok(!objs.some((o) => o.metadata.labels?.['app.kubernetes.io/component'] === 'memcached'));
  const env = configOf(objs, byName(objs, 'Deployment', 'rel-llmserve-cache'));
  assert.equal(env.LIBMEMCACHED, '--SERVER=memcached-0.memcached.data:11211 --SERVER=memcached-1.memcached.data:11211');
});

check('consul: every service registers, advertises its pod IP, reads the token file; host agent address', () => {
  const objs = sets.consul;
  assert.equal(byName(objs, 'ConfigMap', 'rel-llmserve-common').data.CONSUL_HTTP_TOKEN_FILE, '/etc/llmserve/consul/token');
  for (const dep of podsOf(objs)) {
    const comp = dep.metadata.labels['app.kubernetes.io/component'];
    if (comp === 'memcached') continue;
    const svc = comp.toUpperCase();
    const env = configOf(objs, dep);
    assert.equal(env[`LLMSERVE_${svc}_CONSUL`], 'on', `${dep.metadata.name}: --consul`);
    assert.equal(env[`LLMSERVE_${svc}_CONSUL_TAGS`], 'k8s');
    if (comp !== 'metrics') assert.equal(env[`LLMSERVE_${svc}_METRICS`], 'consul');
    const c = dep.spec.template.spec.containers[0];
    const names = c.env.map((e) => e.name);
    assert.ok(names.indexOf('POD_IP') < names.indexOf(`LLMSERVE_${svc}_ADVERTISE`), 'POD_IP after its use');
    assert.equal(env[`LLMSERVE_${svc}_ADVERTISE`], '$(POD_IP)');
    assert.ok(names.indexOf('HOST_IP') >= 0 && names.indexOf('HOST_IP') < names.indexOf('CONSUL_HTTP_ADDR'));
    assert.equal(env.CONSUL_HTTP_ADDR, '$(HOST_IP):8500');
    const vol = dep.spec.template.spec.volumes.find((v) => v.name === 'consul-token');
    assert.equal(vol?.secret?.secretName, 'consul-acl');
    assert.ok(c.volumeMounts.some((m) => m.name === 'consul-token' && m.mountPath === '/etc/llmserve/consul'));
  }
  assert.ok(!objs.some((o) => o.kind === 'Secret'), 'a Secret rendered though existingSecret is given');
});

check('consul with an address and a token value: a Secret of ours, CONSUL_HTTP_ADDR in the ConfigMap', () => {
  const r = template(['--set', 'consul.enabled=true,consul.address=consul-server.consul:8500,consul.token=s3cr3t-token']);
  assert.equal(r.status, 0, r.err);
  const objs = YAML.parseAllDocuments(r.out).map((d) => d.toJSON()).filter((o) => o);
  assert.equal(byName(objs, 'ConfigMap', 'rel-llmserve-common').data.CONSUL_HTTP_ADDR, 'consul-server.consul:8500');
  assert.equal(byName(objs, 'Secret', 'rel-llmserve-consul').stringData.token, 's3cr3t-token');
  for (const cm of objs.filter((o) => o.kind === 'ConfigMap'))
    assert.ok(!JSON.stringify(cm.data).includes('s3cr3t-token'), `token in ConfigMap ${cm.metadata.name}`);
});

check('tracing: OTEL_* environment for every service', () => {
  const objs = sets.tracing;
  const data = byName(objs, 'ConfigMap', 'rel-llmserve-common').data;
  assert.equal(data.OTEL_EXPORTER_OTLP_ENDPOINT, 'http://jaeger-collector.tracing:4318');
  assert.equal(data.OTEL_TRACES_SAMPLER, 'parentbased_traceidratio');
  assert.equal(data.OTEL_TRACES_SAMPLER_ARG, '0.05');
  assert.equal(data.OTEL_RESOURCE_ATTRIBUTES, 'deployment.environment=staging');
  assert.equal(data.OTEL_SDK_DISABLED, undefined);
  const exportMs = Number(data.OTEL_BSP_EXPORT_TIMEOUT);
  assert.ok(exportMs > 0 && exportMs <= 10000, `OTEL_BSP_EXPORT_TIMEOUT ${data.OTEL_BSP_EXPORT_TIMEOUT}`);
  for (const dep of podsOf(objs)) {
    const comp = dep.metadata.labels['app.kubernetes.io/component'];
    if (comp === 'memcached') continue;
    assert.ok(dep.spec.template.spec.containers[0].envFrom.some((e) => e.configMapRef.name === 'rel-llmserve-common'));
    // The drain, the deregistration and the last export all fit in the pod's grace.
    const grace = Number(configOf(objs, dep)[`LLMSERVE_${comp.toUpperCase()}_GRACE_MS`]);
    assert.ok(dep.spec.template.spec.terminationGracePeriodSeconds * 1000 >= grace + 2000 + exportMs,
      `${dep.metadata.name}: terminationGracePeriodSeconds below grace-ms + 2 s + the export timeout`);
  }
});

check('tracing: ServiceMonitor scrapes the collector as job llmserve-metrics', () => {
  const objs = sets.tracing;
  const sm = objs.find((o) => o.kind === 'ServiceMonitor');
  assert.ok(sm, 'no ServiceMonitor');
  assert.equal(sm.metadata.labels.release, 'kube-prometheus-stack');
  const svc = byName(objs, 'Service', 'rel-llmserve-metrics');
  assert.ok(matches(sm.spec.selector.matchLabels, svc.metadata.labels), 'ServiceMonitor does not select the metrics Service');
  const ep = sm.spec.endpoints[0];
  assert.ok(svc.spec.ports.some((p) => p.name === ep.port && p.port === 9464), `endpoint port ${ep.port}`);
  assert.equal(ep.path, '/metrics');
  assert.equal(ep.honorLabels, true);
  assert.ok(ep.relabelings.some((r) => r.targetLabel === 'job' && r.replacement === 'llmserve-metrics'));
});

check('tracing: PrometheusRule equals deploy/prometheus/alerts.yml and passes promtool check rules', () => {
  const objs = sets.tracing;
  const rule = objs.find((o) => o.kind === 'PrometheusRule');
  assert.ok(rule, 'no PrometheusRule');
  const want = YAML.parse(fs.readFileSync(alertsFile, 'utf8'));
  assert.deepEqual(rule.spec.groups, want.groups);
  const f = path.join(tmp, 'rules.yml');
  fs.writeFileSync(f, YAML.stringify({ groups: rule.spec.groups }));
  const r = run('promtool', ['check', 'rules', f]);
  assert.equal(r.status, 0, r.out + r.err);
});

// ---- values the schema refuses --------------------------------------------------------------
const refused = [
  [['image.tag=latest'], /image\.tag/],
  [['memcached.image.tag=latest'], /memcached\.image\.tag/],
  [['inference.pools[0].name=Small_Pool'], /inference\.pools\.0\.name/],
  [['inference.pools[0].weight=-1'], /inference\.pools\.0\.weight/],
  [['inference.pools[0].gpus=two'], /inference\.pools\.0\.gpus/],
  [['inference.pools[0].model.source=pvc'], /claimName/],
  [['inference.pools[0].model.source=ftp'], /inference\.pools\.0\.model\.source/],
  [['inference.pools=null'], /inference/],
  [['tls.enabled=true'], /tls\.cert/],
  [['consul.enabled=true'], /consul\.address/],
  [['memcached.enabled=false'], /memcached\.external/],
  [['memcached.enabled=false', 'memcached.external=not a host'], /memcached\.external/],
  [['apiKeys.enabled=true'], /apiKeys\.keys/],
  [['apiKeys.enabled=true', 'apiKeys.keys[0].key=short'], /apiKeys\.keys\.0\.key/],
  [['tracing.enabled=true'], /tracing\.endpoint/],
  [['tracing.enabled=true', 'tracing.endpoint=http://j:4318', 'tracing.sampler=sometimes'], /tracing\.sampler/],
  [['logLevel=verbose'], /logLevel/],
  [['securityContext.readOnlyRootFilesystem=false'], /securityContext\.readOnlyRootFilesystem/],
  [['podSecurityContext.runAsNonRoot=false'], /podSecurityContext\.runAsNonRoot/],
  [['router.port=70000'], /router\.port/],
  [['router.tiers=large'], /router\.tiers/],
  [['router.options.max_retries=2'], /router\.options/],
  [['routr.replicas=2'], /routr/],
];
for (const [sets_, pattern] of refused) {
  check(`refused: ${sets_.join(' ')}`, () => {
    const args = sets_.flatMap((s) => ['--set', s]);
    const r = template(args);
    assert.notEqual(r.status, 0, `helm template accepted ${sets_.join(' ')}`);
    assert.match(r.err, /values don't meet the specifications of the schema/, r.err);
    assert.match(r.err, pattern, r.err);
  });
}

check('refused: a router policy naming a pool that is not deployed', () => {
  const r = template(['--set', 'router.tiers=huge=0.5']);
  assert.notEqual(r.status, 0, 'helm template accepted router.tiers=huge=0.5');
  assert.match(r.err, /router: pool "huge" .* is not in inference.pools \(small, large\)/, r.err);
  const ok = template(['--set', 'router.tiers=huge=0.5', '--set', 'consul.enabled=true,consul.address=c:8500']);
  assert.equal(ok.status, 0, `with Consul the pools come from the registrations: ${ok.err}`);
});

check('refused: TLS without Consul and without tls.serverName (the router dials pod addresses)', () => {
  const tls = ['--set', 'tls.enabled=true,tls.cert=C,tls.key=K,tls.ca=A'];
  const r = template(tls);
  assert.notEqual(r.status, 0, 'helm template accepted TLS with no server name');
  assert.match(r.err, /tls\.serverName: with TLS and without Consul the router dials the pods' addresses/, r.err);
  const named = template([...tls, '--set', 'tls.serverName=llmserve.internal']);
  assert.equal(named.status, 0, named.err);
});

check('refused: an inference Service name over 63 characters', () => {
  const r = template(['--set', 'fullnameOverride=a-rather-long-release-name-for-llmserve1',
    '--set', 'inference.pools[0].name=abcdefghijklmnop', '--set', 'inference.pools[0].versions[0].name=v1234567890abcde',
    '--set', 'router.defaultPool=abcdefghijklmnop', '--set', 'router.tiers=']);
  assert.notEqual(r.status, 0, 'accepted');
  assert.match(r.err, /is longer than 63 characters/, r.err);
});

// ---- NOTES.txt ------------------------------------------------------------------------------
// helm template does not render NOTES.txt: render it through tpl in a copy of the chart.
function notes(args) {
  const copy = path.join(tmp, 'notes-chart');
  fs.rmSync(copy, { recursive: true, force: true });
  fs.cpSync(chart, copy, { recursive: true, dereference: true });
  fs.renameSync(path.join(copy, 'templates', 'NOTES.txt'), path.join(copy, 'files', 'NOTES.txt'));
  fs.writeFileSync(path.join(copy, 'templates', 'notes-rendered.yaml'),
    'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: {{ tpl (.Files.Get "files/NOTES.txt") . | quote }}\n');
  const r = run(helm, ['template', 'rel', copy, '--namespace', 'llm', '--show-only', 'templates/notes-rendered.yaml', ...args]);
  assert.equal(r.status, 0, r.err);
  return YAML.parse(r.out).data.notes;
}
check('NOTES.txt: llmctl and grpcurl from inside and outside the cluster', () => {
  const n = notes([]);
  assert.match(n, /rel-llmserve-router\.llm\.svc:50051/);
  assert.match(n, /exec deploy\/rel-llmserve-router -- \/usr\/local\/bin\/llmctl \\\n\s+--router rel-llmserve-router:50051 "Tell/);
  assert.match(n, /port-forward svc\/rel-llmserve-router 50051:50051/);
  assert.match(n, /grpcurl -plaintext .*llmserve\.v1\.Router\/Complete/s);
  assert.doesNotMatch(n, /<no value>/);
  const t = notes(['-f', path.join(here, 'values', 'tls-apikeys.yaml')]);
  assert.match(t, /tcpSocket/);
  assert.match(t, /llmctl --router "\$ROUTER" --tls-ca ca\.pem --tls-server-name llmserve\.internal/);
  assert.match(t, /--tls-ca \/etc\/llmserve\/tls\/ca\.crt --tls-server-name llmserve\.internal --api-key/);
  assert.match(t, /grpcurl -cacert ca\.pem -servername llmserve\.internal/);
  assert.match(t, /authorization: Bearer \$LLMSERVE_API_KEY/);
  assert.match(t, /loadBalancer\.ingress/);
  assert.doesNotMatch(t, /<no value>/);
});

console.log(`test_helm_chart: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
