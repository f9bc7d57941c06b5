"""A Kubernetes API emulator for the test suite, built on kmock's KubernetesScaffold.

No real cluster is available in CI or on laptops, so the operator and end-to-end tests talk to this
emulator over HTTP on 127.0.0.1 -- through kopf, the ``kubernetes`` client and real ``kubectl`` -- via a
generated kubeconfig. The modules split the fidelity layer by concern: ``emulator`` (HTTP routing on top of
kmock), ``store`` (object lifecycle, resourceVersions, watches, GC), ``patching``, ``selectors``,
``schema`` (CRD OpenAPI validation and defaults), ``tables`` (server-side printing), ``builtins``
(discovery of built-in kinds), ``k8sproto`` (the protobuf bodies of ``kubectl create namespace`` and the like),
``podlogs`` (``kubectl logs`` from the kubelet's log files), ``server`` (running it), ``fixtures`` (pytest) and
``kubelet`` (runs Jobs as local processes for end-to-end tests).
"""
