"""The python client's streaming calls against a kemu cluster: port-forward over the WebSocket
channel protocol (HTTP and raw bytes through a pod's ports) and exec with stdin.

usage: portforward_exec.py KUBECONFIG POD"""
import sys

from kubernetes import client, config
from kubernetes.stream import portforward, stream

config.load_kube_config(sys.argv[1])
api = client.CoreV1Api()
pod = sys.argv[2]

# One port a session: the channel protocol signals a port's end only by closing the session,
# once every port has ended (as the kubelet does).
pf = portforward(api.connect_get_namespaced_pod_portforward, pod, "default", ports="8080")
http = pf.socket(8080)
http.setblocking(True)
http.settimeout(10)
http.sendall(b"GET /py?format=text HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
answer = b""
while True:
    chunk = http.recv(65536)
    if not chunk:
        break
    answer += chunk
print("ok http answered by pod =", pod.encode() in answer)
print("ok errors =", pf.error(8080))

pf = portforward(api.connect_get_namespaced_pod_portforward, pod, "default", ports="9000")
echo = pf.socket(9000)
echo.setblocking(True)
echo.settimeout(10)
payload = bytes(range(256)) * 256
echo.sendall(payload)
got = b""
while len(got) < len(payload):
    chunk = echo.recv(65536)
    if not chunk:
        break
    got += chunk
print("ok echo same =", got == payload)
echo.close()

resp = stream(api.connect_get_namespaced_pod_exec, pod, "default", command=["cat"], stdin=True, stdout=True,
              stderr=True, tty=False, _preload_content=False)
resp.write_stdin("hello through stdin\n")
out = ""
for _ in range(50):
    resp.update(timeout=0.2)
    out += resp.read_stdout() or ""
    if "\n" in out:
        break
print("ok exec stdin echoed =", repr(out))
resp.close()

# tty=True: the command runs on a terminal of its own (stdout and stderr one stream).
resp = stream(api.connect_get_namespaced_pod_exec, pod, "default", command=["sh", "-c", "test -t 0 && tty && echo on-terminal >&2"],
              stdin=True, stdout=True, stderr=True, tty=True, _preload_content=False)
out = ""
for _ in range(50):
    resp.update(timeout=0.2)
    out += resp.read_stdout() or ""
    if "on-terminal" in out or not resp.is_open():
        break
print("ok exec tty =", "/dev/pts/" in out and "on-terminal" in out, repr(out))
resp.close()
