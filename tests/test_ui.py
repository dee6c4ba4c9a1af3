"""The deployment in the Prefect UI, driven in headless Chromium: its run form, a Quick run and a custom run."""

import re
from collections.abc import Callable, Iterator
from uuid import UUID

import pytest
from playwright.sync_api import Browser, Locator, Page, Response, expect
from prefect.client.schemas.actions import DeploymentUpdate

from flows.parameters import SegmentationParameters
from flows.trigger import DEPLOYMENT
from tests.chromium import chromium

pytest_plugins = ["tests.prefect_stack"]

RUN_TIMEOUT_MS = 300_000
FINAL_STATES = re.compile("Completed|Failed|Crashed|Cancelled")
# Prefect's SQLite server answers 503 when two writes collide (SQLite refuses the second at once, whatever its
# busy timeout); its UI shows an error and does not retry, so the tests submit again, as a user would.
SERVER_BUSY = 503
SUBMIT_ATTEMPTS = 3
# What the UI shows after a round trip to the server: on a busy machine, more than Playwright's 5 s.
SERVER_ROUND_TRIP_MS = 30_000


@pytest.fixture(scope="module")
def deployment_id(prefect_stack) -> Iterator[UUID]:
    """The one-off deployment with defaults that make Quick runs small and publish to the test bucket.

    The stack is the session's: its defaults are restored afterwards for the tests that run later.
    """
    with prefect_stack.client() as client:
        deployment = client.read_deployment_by_name(DEPLOYMENT)
        params = deployment.parameters["params"] | {"target": f"s3://{prefect_stack.bucket}/ui", "demo_lines": 20_000}
        client.update_deployment(deployment.id, DeploymentUpdate(parameters={"params": params}))
    yield deployment.id
    with prefect_stack.client() as client:
        client.update_deployment(deployment.id, DeploymentUpdate(parameters=deployment.parameters))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Browser, prefect_stack) -> Iterator[Page]:
    context = browser.new_context(base_url=prefect_stack.ui_url, viewport={"width": 1400, "height": 1000})
    yield context.new_page()
    context.close()


@pytest.fixture(scope="module")
def screenshot(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Page, str], None]:
    """Save what the page shows as <name>.png in the module's tmp dir (pytest keeps the last sessions' ones)."""
    directory = tmp_path_factory.mktemp("ui-screenshots")

    def take(page: Page, name: str) -> None:
        page.screenshot(path=directory / f"{name}.png")

    return take


def test_the_run_form_describes_every_parameter(page: Page, deployment_id: UUID, screenshot):
    open_run_form(page, deployment_id)
    for field in SegmentationParameters.model_json_schema()["properties"].values():
        header = form_field(page, field["title"]).locator(":scope > .p-label__header")
        description = header.locator(".schema-form-property__description")
        expect(description).to_have_text(as_markdown_shows(field["description"]))
    screenshot(page, "run-form")


def test_an_invalid_value_is_shown_in_the_form_and_starts_no_run(page: Page, deployment_id: UUID, prefect_stack,
                                                                 screenshot):
    open_run_form(page, deployment_id)
    eps = form_field(page, "Eps")
    eps.get_by_role("button", name="float", exact=True).click()
    eps.locator("input").fill("-1")
    with prefect_stack.client() as client:
        runs_before = client.count_flow_runs()
        page.get_by_role("button", name="Submit").click()
        expect(eps.locator(".p-label__message--failed")).to_contain_text("-1 is not valid",
                                                                         timeout=SERVER_ROUND_TRIP_MS)
        eps.scroll_into_view_if_needed()
        screenshot(page, "invalid-eps")
        assert client.count_flow_runs() == runs_before
    expect(page).to_have_url(re.compile(r"/run$"))


def test_a_quick_run_and_a_custom_run_from_the_ui_complete(page: Page, deployment_id: UUID, prefect_stack, screenshot):
    quick_run = start_quick_run(page, deployment_id)
    screenshot(page, "quick-run-started")
    expect_completed(page, quick_run, screenshot, "quick-run")
    custom_run = start_custom_run(page, deployment_id, run_id="ui-custom-run")
    expect_completed(page, custom_run, screenshot, "custom-run")
    published = prefect_stack.s3().list_objects_v2(Bucket=prefect_stack.bucket, Prefix="ui/runs/ui-custom-run/")
    assert "ui/runs/ui-custom-run/manifest.json" in {entry["Key"] for entry in published["Contents"]}


def expect_completed(page: Page, flow_run_id: UUID, screenshot, name: str) -> None:
    """Wait on the flow run's page until it has ended, take a screenshot, and require it Completed."""
    page.goto(f"/runs/flow-run/{flow_run_id}")
    state = page.locator(".state-badge").first
    expect(state).to_have_text(FINAL_STATES, timeout=RUN_TIMEOUT_MS)
    screenshot(page, name)
    expect(state).to_have_text("Completed")


def start_quick_run(page: Page, deployment_id: UUID) -> UUID:
    """Run -> Quick run on the deployment's page; the id of the flow run it created."""
    page.goto(f"/deployments/deployment/{deployment_id}")

    def quick_run() -> None:
        page.locator("button.run-menu__run-button").click()
        page.get_by_text("Quick run", exact=True).click()

    return created_flow_run(page, quick_run)


def start_custom_run(page: Page, deployment_id: UUID, run_id: str) -> UUID:
    """The deployment's run form with one parameter changed, the run id; the id of the flow run it created."""
    open_run_form(page, deployment_id)
    run_id_field = form_field(page, "Run Id")
    run_id_field.get_by_role("button", name="str", exact=True).click()
    run_id_field.locator("input, textarea").fill(run_id)
    return created_flow_run(page, page.get_by_role("button", name="Submit").click)


def created_flow_run(page: Page, submit: Callable[[], None]) -> UUID:
    """The id of the flow run that `submit` creates, submitting again while the server answers busy."""
    for _ in range(SUBMIT_ATTEMPTS):
        with page.expect_response(creates_a_flow_run) as answer:
            submit()
        if answer.value.status != SERVER_BUSY:
            break
    response = answer.value
    assert response.ok, f"create_flow_run answered {response.status}: {response.text()}"
    return UUID(response.json()["id"])


def open_run_form(page: Page, deployment_id: UUID) -> None:
    """The deployment's run form, once the deployment it is filled from has arrived."""
    page.goto(f"/deployments/deployment/{deployment_id}/run")
    expect(page.get_by_role("button", name="Submit")).to_be_visible(timeout=SERVER_ROUND_TRIP_MS)


def form_field(page: Page, title: str) -> Locator:
    """The run form's field with this title (not the `params` group around it)."""
    label = re.compile(rf"^{re.escape(title)}( \(Optional\))?$")
    return page.locator(".schema-form-property").filter(
        has=page.locator(":scope > .p-label__header .schema-form-property__label", has_text=label))


def creates_a_flow_run(response: Response) -> bool:
    return response.request.method == "POST" and response.url.endswith("/create_flow_run")


def as_markdown_shows(description: str) -> str:
    """A description as the form renders it: Markdown, so `code` loses its backticks and a bare <tag> disappears."""
    pieces = description.split("`")  # odd pieces are code spans, shown verbatim
    return "".join(piece if index % 2 else re.sub(r"<[^>]+>", "", piece) for index, piece in enumerate(pieces))
