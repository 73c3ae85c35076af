async def test_servers_answer(r, pool, ch):
    assert await r.ping()
    assert await pool.fetchval("SELECT 1") == 1
    assert await ch.command("SELECT 1") == 1
