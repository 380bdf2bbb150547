import uuid

from standardwebhooks.webhooks import Webhook

from tests.factories import make_callback, make_job
from workers.delivery import deliver
from workers.http import OutboundClient
from workers.running import execute_job


def test_pipeline(db_session, settings, tenant, receiver, sent_tasks):
    t, _ = tenant
    cb = make_callback(db_session, t, receiver.url("/hook"))
    job = make_job(db_session, t, "echo", {"x": 1}, callback_url=receiver.url("/adhoc"))
    assert execute_job(db_session, settings, job.id) is True
    ids = [c.args[0] for c in sent_tasks if c.name == "boomerang.deliver"]
    assert len(ids) == 2
    client = OutboundClient(settings)
    for i in ids:
        assert deliver(db_session, client, settings, uuid.UUID(i)) is True
    got = receiver.wait_for(1, "/hook")
    payload = Webhook(cb.secret).verify(got[0].body, got[0].headers)
    assert payload["data"]["result"] == {"x": 1}
    adhoc = receiver.wait_for(1, "/adhoc")
    Webhook(t.signing_secret).verify(adhoc[0].body, adhoc[0].headers)
