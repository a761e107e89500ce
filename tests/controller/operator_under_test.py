"""The operator as the reconcile tests run it: the real handlers, logged in to the fake API server.

kopf is pointed at the fake with a login handler (kopf would otherwise look for a real cluster); the handlers'
own `kubernetes` client reads $KUBECONFIG, which the test writes for the fake.
"""

import os

import kopf

import runtime.controller.handlers  # noqa: F401  (registers the Workspace handlers)


@kopf.on.login()
def login_to_fake_api(**_) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(server=os.environ["KAITO_FAKE_KUBE_URL"], insecure=True, scheme="Bearer",
                               token="fake-token")
