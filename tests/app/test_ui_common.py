"""The app shell (ui/common.py, ui/tokens.py): user errors become messages, tables download as CSV,
the model cache is keyed by content, token HTML carries roles, values and hovers."""

import pandas as pd
from streamlit.testing.v1 import AppTest

from ui.tokens import legend_html, token_html


def _errors_app():
    import streamlit as st

    from ds_core.models.checkpoint import CheckpointError
    from ui.common import user_errors

    with user_errors("Loading"):
        raise CheckpointError("/nope is not a checkpoint directory")
    with user_errors():
        raise RuntimeError("boom")
    st.write("still drawn")


def test_user_errors_are_messages_and_the_page_goes_on():
    at = AppTest.from_function(_errors_app, default_timeout=60).run()
    assert not at.exception
    msgs = [e.value for e in at.error]
    assert msgs[0] == "Loading: /nope is not a checkpoint directory"
    assert "unexpected error (RuntimeError: boom)" in msgs[1]
    assert any("still drawn" in m.value for m in at.markdown)


def _table_app():
    import pandas as pd

    from ui.common import table

    table(pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), "my table / v1")


def test_table_has_a_csv_download():
    at = AppTest.from_function(_table_app, default_timeout=60).run()
    assert not at.exception
    assert at.dataframe[0].value.shape == (2, 2)
    labels = [b.label for b in at.get("download_button")]
    assert labels == ["Download my table / v1 (CSV)"]


def _ckpt_app():
    import streamlit as st

    from ui.common import get_checkpoint, user_errors

    with user_errors("Loading"):
        ck = get_checkpoint(st.session_state.get("path", "checkpoints/rl"))
        st.write(f"loaded {ck.name} {ck.hash}")
        st.session_state["same"] = ck is get_checkpoint(st.session_state.get("path", "checkpoints/rl"))


def test_get_checkpoint_caches_and_refuses_non_checkpoints(tmp_path):
    at = AppTest.from_function(_ckpt_app, default_timeout=60).run()
    assert not at.exception and not at.error
    assert at.session_state["same"] is True
    at.session_state["path"] = str(tmp_path)
    at.run()
    assert not at.exception
    assert "is not a checkpoint directory" in at.error[0].value


def _store_app():
    import streamlit as st

    from ui.common import results_store

    st.write(str(results_store().path))


def test_results_store_follows_ds_lens_data(tmp_path, monkeypatch):
    for name in ("one", "two"):
        monkeypatch.setenv("DS_LENS_DATA", str(tmp_path / name))
        at = AppTest.from_function(_store_app, default_timeout=60).run()
        assert str(tmp_path / name) in at.markdown[0].value


def test_token_html_roles_shading_and_hover():
    df = pd.DataFrame(
        {
            "token": ["<bos>", "1", "<", "[STOP]"],
            "role": ["prompt", "sampling", "sampling", "decision"],
            "share": [0.0, 0.5, -1.0, float("nan")],
        }
    )
    h = token_html(df, "share", ["share"], highlight=3)
    assert h.count("<span") == 4
    assert "rgba(220,38,38,0.425)" in h  # +0.5 of max |1.0| -> red at 0.5*0.85
    assert "rgba(37,99,235,0.850)" in h  # -1.0 -> full blue
    assert "share: n/a" in h  # NaN shown, not shaded
    assert "&lt;" in h and "<bos>" not in h.replace("&lt;bos&gt;", "")  # escaped
    assert "outline:2px solid" in h and "font-weight:700" in h
    assert "decision" in legend_html()
