"""Tests of `hwc-gateway demo`: what it shows a newcomer holds, for the OpenPGP schools and for
the school that reads its notices on the pickup page (issue 15, point 8). The demo runs once
per module (a real gateway, real gpg, loopback SMTP and HTTP); each test reads one part of its
output. `visible_lines`, which turns a page into what the demo prints, is pinned on its own."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from gateway.devkit.demopickup import shown_path, visible_lines


@pytest.fixture(scope="module")
def demo() -> str:
    result = subprocess.run([sys.executable, "-m", "gateway", "demo"], capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def section(out: str, heading: str) -> str:
    """The part of the demo's output under the `== ` heading that starts with `heading`."""
    start = out.index(f"\n== {heading}")
    end = out.find("\n== ", start + 1)
    return out[start:end if end != -1 else len(out)]


def test_demo_shows_each_openpgp_school_its_notice(demo: str) -> None:
    """The OpenPGP schools' notices are decrypted and signed by the gateway; the held and the
    rejected signals are shown; the receipt chain is intact."""
    schools = [line for line in demo.splitlines()
               if line.startswith("-- school") and "outer Subject" in line]
    assert len(schools) == 3 and all("signed by the gateway key" in line for line in schools)
    assert demo.count("Status van uw signaal") == 3
    assert "Signal accepted as" in demo and "554 5.7.7" in demo
    assert "not in the register and no school named" in demo
    assert re.search(r"receipts verify`: intact \(\d+ receipts\)", demo)


def test_demo_invites_the_pickup_contact_with_a_phone_code_and_a_mail(demo: str) -> None:
    """`schools add --pickup` prints the code to read out; the enrolment mail reached the
    school's server (its route, as its notices) with its link and without the code."""
    code = re.search(r"enrolment code for ib@sintjozef\.example\.nl: ([A-Z0-9]{4}-[A-Z0-9]{4})",
                     demo)
    assert code is not None
    enrolment = section(demo, "Sint-Jozefschool has no OpenPGP key")
    mail = enrolment[:enrolment.index("The contact opens the link")]
    assert "Uitnodiging voor de beveiligde ophaalpagina" in mail and "/inschrijven/" in mail
    assert code[1] not in mail


def test_demo_enrols_the_contact_with_an_app(demo: str) -> None:
    """Over HTTP the phone code is accepted, the app is chosen, its first code confirms it, and
    the enrolment is finished; the demo says why it is not a passkey."""
    enrolment = section(demo, "Sint-Jozefschool has no OpenPGP key")
    assert "A passkey needs a real" in enrolment
    assert "De inschrijfcode klopt." in enrolment
    assert re.search(r"\| Kunt u niet scannen\?.*\n.*\| [A-Z2-7]{4}( [A-Z2-7]{4}){7}\n",
                     enrolment)
    assert "U bent ingeschreven." in enrolment


def test_demo_notification_mail_shows_no_child(demo: str) -> None:
    """The pickup school's mail is the neutral notification with a /bericht/ link: no name,
    birth date, reference or codeword in it."""
    start = demo.index("-- school 56EF00")
    mail = demo[start:demo.index("\n== ", start)]
    assert "Er staat een vertrouwelijk bericht voor u klaar" in mail and "/bericht/" in mail
    for revealing in ("Lotte", "Vries", "Geboortedatum", "HWC-", "Handle with Care"):
        assert revealing not in mail
    assert "checked: it names no child" in mail


def test_demo_opens_the_notice_with_the_app_code_and_records_gelezen(demo: str) -> None:
    """After the address and the app's code the notice page shows the child and the teacher
    text; "Gelezen" leads to the thank-you page."""
    opened = section(demo, "Sint-Jozefschool (56EF00): its contact opens the link")
    assert "-> 303, on to /bericht/" in opened and "/lezen" in opened
    page = opened[opened.index("/lezen: the notice"):opened.index('POST "Gelezen"')]
    for shown in ("| Naam: Lotte de Vries", "| Geboortedatum: ", "| Referentie: HWC-",
                  "| Dit kind heeft een ingrijpende gebeurtenis", "| [Gelezen]"):
        assert shown in page
    assert "Wij hebben vastgelegd dat u het bericht op" in opened


def test_demo_acknowledges_an_openpgp_notice_by_its_link(demo: str) -> None:
    """With [web] on the OpenPGP notice holds a /bevestig/ link, not a reply address; the demo
    follows it and the page thanks the contact."""
    assert "ack+" not in demo and "/bevestig/" in demo
    confirmed = section(demo, "An OpenPGP school confirms a notice")
    assert "'Ik heb het bericht gelezen'" in confirmed and "-> 200: 'Dank u wel'" in confirmed


def test_demo_receipts_record_the_pickup_journey(demo: str) -> None:
    """The receipts list shows the invitation, the enrolment, the opening, and both
    acknowledgements (via the pickup page and via the link)."""
    receipts = section(demo, "Receipts")
    for event in (r"school\.contact_invited .* 56EF00 .*channel pickup",
                  r"school\.contact_enrolled .* 56EF00 .*method totp",
                  r"enrolment_sent .* 56EF00 ",
                  r"pickup_opened .* 56EF00 .*by ib@sintjozef\.example\.nl from 127\.0\.0\.1",
                  r"acknowledged .* 56EF00 .*via pickup",
                  r"acknowledged .* 12AB00 .*via link"):
        assert re.search(event, receipts), event
    assert "Lotte" not in receipts


def test_visible_lines_are_what_a_reader_sees() -> None:
    """A page becomes its main part's paragraphs and headings, a term with its value on one
    line, buttons in brackets, and nothing hidden, scripted or drawn (the QR code's SVG)."""
    html = ('<html><head><title>T</title></head><body><header>Brand</header><main>'
            '<h1>Titel</h1><p>Een <a href="#">zin</a>\n over  twee regels.</p>'
            '<dl><dt>Naam</dt><dd>Sanne</dd></dl><p hidden>verborgen</p>'
            '<div class="qr"><svg><title>QR</title><path d="M0"/></svg></div>'
            '<form><input type="hidden" name="csrf" value="x"><button>Gelezen</button></form>'
            '<script>alert(1)</script></main><footer>Voet</footer></body></html>')
    assert visible_lines(html) == ["Titel", "Een zin over twee regels.", "Naam: Sanne",
                                   "[Gelezen]"]


def test_shown_path_cuts_link_tokens_short() -> None:
    """A URL on screen keeps its path but only the start of a link's token."""
    token = "A" * 43
    assert shown_path(f"http://localhost:8080/bericht/{token}/lezen") == "/bericht/AAAAAA…/lezen"
