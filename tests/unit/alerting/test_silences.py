import pytest
import redis.asyncio as aioredis

from fedmesh.errors import FailedPrecondition, InvalidArgument, NotFound
from fedmesh.services.alerting.matchers import parse_matcher
from fedmesh.services.alerting.silences import SilenceStore

T0 = 1_700_000_000_000


async def test_a_silence_mutes_what_it_matches_until_it_ends(redis_client: aioredis.Redis) -> None:
    store = SilenceStore(redis_client)
    silence = await store.create(
        [parse_matcher('alertname="NodeStale"'), parse_matcher("region=~r[12]")],
        60,
        "oncall",
        "maintenance",
        T0,
    )

    assert silence.ends_unix_ms == T0 + 60_000
    assert silence.mutes({"alertname": "NodeStale", "region": "r2"})
    assert not silence.mutes({"alertname": "NodeStale", "region": "r3"})
    assert [s.id for s in await store.active(T0 + 59_999)] == [silence.id]
    assert await store.active(T0 + 60_000) == []
    assert await store.all() == [silence]


async def test_expire_ends_a_silence_now_once(redis_client: aioredis.Redis) -> None:
    store = SilenceStore(redis_client)
    silence = await store.create([parse_matcher("alertname=X")], 3600, "oncall", "", T0)

    expired = await store.expire(silence.id, T0 + 10)

    assert expired.ends_unix_ms == T0 + 10
    assert expired.matchers == silence.matchers
    assert await store.active(T0 + 10) == []
    with pytest.raises(
        FailedPrecondition, match=f"silence {silence.id} already ended at {T0 + 10}"
    ):
        await store.expire(silence.id, T0 + 20)
    with pytest.raises(NotFound, match="no silence has id 'nope'"):
        await store.expire("nope", T0)


async def test_prune_forgets_silences_that_ended_before_the_cutoff(
    redis_client: aioredis.Redis,
) -> None:
    store = SilenceStore(redis_client)
    old = await store.create([parse_matcher("alertname=X")], 1, "oncall", "", T0)
    young = await store.create([parse_matcher("alertname=Y")], 100, "oncall", "", T0)

    assert await store.prune(T0 + 50_000) == 1
    assert [s.id for s in await store.all()] == [young.id]
    assert old.id not in {s.id for s in await store.all()}


@pytest.mark.parametrize(
    ("matchers", "duration_s", "by", "reason"),
    [
        ([], 60, "oncall", "a silence needs at least one matcher"),
        (['region=~".*"'], 60, "oncall", "would silence everything"),
        (["region!=r1"], 60, "oncall", "would silence everything"),
        (["alertname=X"], 0, "oncall", "duration_s is 0; expected more than 0"),
        (["alertname=X"], float("nan"), "oncall", "duration_s is nan"),
        (["alertname=X"], 400 * 86_400, "oncall", "at most 31622400"),
        (["alertname=X"], 60, "", "created_by is required (who is silencing)"),
    ],
)
async def test_invalid_silences_are_refused_and_nothing_is_stored(
    redis_client: aioredis.Redis, matchers: list[str], duration_s: float, by: str, reason: str
) -> None:
    store = SilenceStore(redis_client)
    with pytest.raises(InvalidArgument) as info:
        await store.create([parse_matcher(m) for m in matchers], duration_s, by, "", T0)
    assert reason in str(info.value)
    assert await store.all() == []
