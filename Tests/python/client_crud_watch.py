"""The official python `kubernetes` client against a kemu server: CRUD on core and apps objects,
and a watch that sees a pod added, modified and deleted. Prints one line per fact it checked;
any mismatch raises, so the exit status is non-zero.

usage: client_crud_watch.py KUBECONFIG
"""
import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
apps = client.AppsV1Api()
NS = "pyclient"


def check(what, got, want):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")
    print(f"ok {what} = {got}")


core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
check("namespace phase", core.read_namespace(NS).status.phase, "Active")

# Service: the server allocates a ClusterIP from the service range.
svc = core.create_namespaced_service(NS, client.V1Service(
    metadata=client.V1ObjectMeta(name="web", labels={"app": "web"}),
    spec=client.V1ServiceSpec(selector={"app": "web"}, ports=[client.V1ServicePort(port=80, target_port=8080)])))
check("service clusterIP in 10.96.0.0/16", svc.spec.cluster_ip.startswith("10.96."), True)

# A watch from the list's revision sees what happens next, in order.
start = core.list_namespaced_pod(NS).metadata.resource_version
seen = []
done = threading.Event()


def follow():
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_pod, NS, resource_version=start, timeout_seconds=10):
        seen.append(f"{event['type']} {event['object'].metadata.name} {event['object'].metadata.labels.get('tier')}")
        if event["type"] == "DELETED":
            w.stop()
    done.set()


threading.Thread(target=follow, daemon=True).start()

pod = client.V1Pod(metadata=client.V1ObjectMeta(name="web-1", labels={"app": "web", "tier": "a"}),
                   spec=client.V1PodSpec(node_name="node-1",  # bound: the scheduler leaves it alone
                                         containers=[client.V1Container(name="echo", image="kemu/echo")]))
created = core.create_namespaced_pod(NS, pod)
check("pod phase after create", created.status.phase, "Pending")
core.patch_namespaced_pod("web-1", NS, {"metadata": {"labels": {"tier": "b"}}})
check("pod label after patch", core.read_namespaced_pod("web-1", NS).metadata.labels["tier"], "b")

# Optimistic concurrency: a replace carrying a stale resourceVersion is a 409.
stale = created
stale.metadata.labels["tier"] = "c"
try:
    core.replace_namespaced_pod("web-1", NS, stale)
    raise AssertionError("a stale replace succeeded")
except ApiException as e:
    check("stale replace status", e.status, 409)

core.delete_namespaced_pod("web-1", NS)
check("watch finished", done.wait(10), True)
check("watch events", seen, ["ADDED web-1 a", "MODIFIED web-1 b", "DELETED web-1 b"])

try:
    core.read_namespaced_pod("web-1", NS)
    raise AssertionError("a deleted pod is still readable")
except ApiException as e:
    check("read after delete status", e.status, 404)

# apps/v1 and the scale subresource.
rs = apps.create_namespaced_replica_set(NS, client.V1ReplicaSet(
    metadata=client.V1ObjectMeta(name="web"),
    spec=client.V1ReplicaSetSpec(
        replicas=1, selector=client.V1LabelSelector(match_labels={"app": "web"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "web"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="echo", image="kemu/echo")])))))
check("replicaset generation", rs.metadata.generation, 1)
apps.patch_namespaced_replica_set_scale("web", NS, {"spec": {"replicas": 3}})
check("replicas after scale", apps.read_namespaced_replica_set("web", NS).spec.replicas, 3)
check("replicasets listed", [r.metadata.name for r in apps.list_namespaced_replica_set(NS).items], ["web"])

core.delete_namespace(NS)
check("namespace gone", [n.metadata.name for n in core.list_namespace().items if n.metadata.name == NS], [])
