// Offline validation of rendered Kubernetes manifests (the output of `kubectl kustomize`):
//   node validate_manifests.mjs FILE.yaml
//   node validate_manifests.mjs --to-json FILE.yaml   (any YAML as a JSON array of documents)
// Every object is checked against its API schema (kubernetes-models and its KEDA and
// prometheus-operator packages) and against moemesh's own rules: pods run as non-root with
// seccomp RuntimeDefault, containers drop ALL capabilities and escalate no privilege, images
// carry a tag that is not `latest`, GPU requests equal limits, every $(VAR) of a command is
// defined by the container's env or envFrom ConfigMap, workloads carry the
// app.kubernetes.io/* and moemesh.io/role labels. Prints one JSON object:
//   {"objects": [{"apiVersion", "kind", "name", "replicas"?, "containers"?: [{name, image,
//     requests, limits}], ...}], "errors": ["kind/name: message", ...]}
// and exits 0 (the caller decides; errors are in the output), 2 on a usage or parse error.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { parseAllDocuments } from "yaml";

const require = createRequire(import.meta.url);

// The module holding apiVersion's models: core "v1", "apps/v1", CRD groups in their packages.
function modelModule(apiVersion) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  if (group === "keda.sh") return `@kubernetes-models/keda/${group}/${version}`;
  if (group === "monitoring.coreos.com") {
    return `@kubernetes-models/prometheus-operator/${group}/${version}`;
  }
  return group === "" ? `kubernetes-models/${version}` : `kubernetes-models/${group}/${version}`;
}

function modelClass(apiVersion, kind) {
  try {
    return require(modelModule(apiVersion))[kind];
  } catch {
    return undefined;
  }
}

const WORKLOADS = new Set(["Deployment", "StatefulSet", "Job", "DaemonSet"]);

// $(VAR) references in a container's command and args that neither its env nor the
// ConfigMaps of its envFrom define (Kubernetes would pass them on literally).
function undefinedVariables(container, configMaps) {
  const defined = new Set((container.env ?? []).map((e) => e.name));
  for (const source of container.envFrom ?? []) {
    const data = configMaps.get(source.configMapRef?.name);
    for (const key of Object.keys(data ?? {})) defined.add((source.prefix ?? "") + key);
  }
  const missing = [];
  for (const word of [...(container.command ?? []), ...(container.args ?? [])]) {
    for (const match of String(word).matchAll(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g)) {
      if (!defined.has(match[1])) missing.push(match[1]);
    }
  }
  return missing;
}

function checkPod(errors, where, podSpec, configMaps) {
  const pod = podSpec.securityContext ?? {};
  if (pod.runAsNonRoot !== true) errors.push(`${where}: pod securityContext.runAsNonRoot is not true`);
  if (pod.seccompProfile?.type !== "RuntimeDefault") {
    errors.push(`${where}: pod seccompProfile is not RuntimeDefault`);
  }
  const containers = [...(podSpec.initContainers ?? []), ...(podSpec.containers ?? [])];
  for (const c of containers) {
    const at = `${where} container ${c.name}`;
    for (const name of undefinedVariables(c, configMaps)) errors.push(`${at}: $(${name}) is not defined`);
    const sc = c.securityContext ?? {};
    if (!(sc.capabilities?.drop ?? []).includes("ALL")) errors.push(`${at}: does not drop ALL capabilities`);
    if (sc.allowPrivilegeEscalation !== false) errors.push(`${at}: allowPrivilegeEscalation is not false`);
    const image = c.image ?? "";
    const tag = image.includes("@") ? "digest" : image.split("/").pop().split(":")[1];
    if (!tag) errors.push(`${at}: image '${image}' has no tag`);
    if (tag === "latest") errors.push(`${at}: image '${image}' uses the latest tag`);
    const requests = c.resources?.requests ?? {};
    const limits = c.resources?.limits ?? {};
    for (const key of new Set([...Object.keys(requests), ...Object.keys(limits)])) {
      if (key.endsWith("/gpu") && String(requests[key]) !== String(limits[key])) {
        errors.push(`${at}: ${key} requests ${requests[key]} != limits ${limits[key]}`);
      }
    }
  }
  const probe = (p) => (p === undefined ? null : Object.keys(p).find((k) => ["grpc", "httpGet", "exec", "tcpSocket"].includes(k)) ?? "other");
  return containers.map((c) => ({
    name: c.name,
    image: c.image,
    requests: c.resources?.requests ?? {},
    limits: c.resources?.limits ?? {},
    command: c.command ?? [],
    args: c.args ?? [],
    startupProbe: probe(c.startupProbe),
    livenessProbe: probe(c.livenessProbe),
    readinessProbe: probe(c.readinessProbe),
    preStop: c.lifecycle?.preStop !== undefined,
  }));
}

function main() {
  if (process.argv.length === 4 && process.argv[2] === "--to-json") {
    // Any YAML file (all its documents) as a JSON array, for tests that compare YAML.
    const docs = parseAllDocuments(readFileSync(process.argv[3], "utf8")).map((d) => d.toJS());
    process.stdout.write(JSON.stringify(docs) + "\n");
    return;
  }
  if (process.argv.length !== 3) {
    console.error("usage: node validate_manifests.mjs RENDERED.yaml | --to-json FILE.yaml");
    process.exit(2);
  }
  const docs = parseAllDocuments(readFileSync(process.argv[2], "utf8"));
  const objects = [];
  const errors = [];
  const configMaps = new Map();
  for (const doc of docs) {
    const object = doc.errors.length === 0 ? doc.toJS() : null;
    if (object?.kind === "ConfigMap") configMaps.set(object.metadata?.name, object.data ?? {});
  }
  for (const doc of docs) {
    if (doc.errors.length > 0) {
      console.error(`YAML parse error: ${doc.errors[0].message}`);
      process.exit(2);
    }
    const object = doc.toJS();
    if (object === null || object === undefined) continue;
    const name = object.metadata?.name ?? "(no name)";
    const where = `${object.kind}/${name}`;
    const summary = { apiVersion: object.apiVersion, kind: object.kind, name };
    const Model = modelClass(object.apiVersion, object.kind);
    if (Model === undefined) {
      errors.push(`${where}: no schema for ${object.apiVersion} ${object.kind}`);
    } else {
      try {
        new Model(object).validate();
      } catch (error) {
        errors.push(`${where}: ${error.message}`);
      }
    }
    if (WORKLOADS.has(object.kind)) {
      const labels = object.metadata?.labels ?? {};
      for (const key of ["app.kubernetes.io/part-of", "app.kubernetes.io/instance", "moemesh.io/role"]) {
        if (!(key in labels)) errors.push(`${where}: no label ${key}`);
      }
      const podSpec = object.spec?.template?.spec ?? {};
      summary.replicas = object.spec?.replicas;
      summary.containers = checkPod(errors, where, podSpec, configMaps);
      summary.terminationGracePeriodSeconds = podSpec.terminationGracePeriodSeconds;
    }
    if (object.kind === "HorizontalPodAutoscaler") {
      summary.minReplicas = object.spec?.minReplicas;
      summary.maxReplicas = object.spec?.maxReplicas;
      summary.metrics = (object.spec?.metrics ?? []).map((m) => m.pods?.metric?.name ?? m.type);
    }
    if (object.kind === "ScaledObject") {
      summary.minReplicas = object.spec?.minReplicaCount;
      summary.maxReplicas = object.spec?.maxReplicaCount;
    }
    if (object.kind === "PrometheusRule") summary.groups = object.spec?.groups;
    if (object.kind === "ConfigMap") summary.data = object.data;
    objects.push(summary);
  }
  process.stdout.write(JSON.stringify({ objects, errors }) + "\n");
}

main();
