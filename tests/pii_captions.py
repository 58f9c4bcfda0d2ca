"""A generated caption benchmark with planted personal data, for the desensitization tests.

Each caption is an image description in the style of web alt-text with zero to two entities
planted in varied forms (the forms people write them in), and distractors that look like them
but are not personal data: resolutions, dates, prices, ISBNs, camera settings, file names,
version numbers, card-like numbers whose checksum fails. Not among them: digit strings that are
valid numbers in a searched region's plan (a bare 10-digit catalogue number is a valid Indian or
Brazilian phone number, and is found as one by design), and an IPv6 address directly followed by
a colon (``fe80::1:2:`` is itself a valid address prefix); IPv6 addresses are never put before
the caption with ": ". Every planted entity is recorded with its
type and character span, so a recognizer's recall and precision are measured per type.

Numbers are made valid where validity is what a recognizer checks: card numbers pass the Luhn
check (ISO/IEC 7812), IBANs the ISO 13616 mod-97 check, phone numbers are in the number plans of
their countries (the fictional ranges: US 555-01xx, UK Ofcom's drama numbers 020 7946 0xxx).
"""

from __future__ import annotations

import random
import string

SUBJECTS = ["a red fox in the snow", "sunset over the harbour", "portrait of a woman in a blue coat",
            "vintage car on a country road", "bowl of ramen on a wooden table", "mountain lake at dawn",
            "a watercolor of tulips", "studio shot of leather boots", "kids playing football in a park",
            "aerial view of a river delta", "a cat sleeping on a windowsill", "wedding cake with roses"]
#: how an entity is attached to a caption: (text before it, text after it), after the caption
AFTER = [(", contact ", ""), (" - photo by ", ""), (" (for prints: ", ")"), (". Licensing: ", "."), ("; more at ", ""),
         (" call ", " to order"), (" ", "")]
#: ... or before the caption
BEFORE = [("", " | "), ("", ": "), ("[", "] ")]
DISTRACTORS = ["1920x1080", "shot on 2019-05-12", "12/05/2019", "$1,299.99", "24 x 36 inches", "SKU 48213-775",
               "ISBN 978-0-306-40615-7", "at 10:30 am", "v2.3", "50% off", "IMG_20190512_103045.jpg", "4k uhd",
               "f/2.8 1/250s iso 400", "3.14159", "size 10.5", "no. 4111 1111 1111 1112", "ref 5500 0000 0000 0005",
               "lot 12 of 48", "since 1987", "rated 4.5/5", "pack of 12", "page 3 of 7", "model A1466", "e.g. oak",
               "100-200 mm", "0.5 ct diamond", "room 4b", "2x3 grid", "edition 3/25", "cat. no. 48-213"]

FIRST = ["john", "maria", "wei", "fatima", "lukas", "aiko", "olga", "pedro", "amara", "noah"]
LAST = ["smith", "garcia", "chen", "khan", "muller", "tanaka", "ivanova", "silva", "okafor", "brown"]
DOMAINS = ["example.com", "mail.example.org", "photos.example.net", "studio-k.co.uk", "example.de", "my-shop.io",
           "univ.example.edu", "example.fr"]


def _email(r: random.Random) -> str:
    f, last, d = r.choice(FIRST), r.choice(LAST), r.choice(DOMAINS)
    local = r.choice([f"{f}.{last}", f"{f}_{last}{r.randint(1, 99)}", f"{f[0]}{last}", f"{f}+prints", f"{f}.{last}"
                      .upper(), f"{last}-{f}"])
    return f"{local}@{d}"


def _phone(r: random.Random) -> str:
    n = r.randint(100, 199)
    forms = [f"(415) 555-01{n % 100:02d}", f"212-555-01{n % 100:02d}", f"+1 415 555 01{n % 100:02d}",
             f"646.555.01{n % 100:02d}", f"+44 20 7946 0{n % 1000:03d}", f"020 7946 0{n % 1000:03d}",
             f"+33 1 42 68 {r.randint(10, 99)} {r.randint(10, 99)}", f"+49 30 {r.randint(200000, 999999)}",
             f"+91 98765 {r.randint(10000, 99999)}"]
    return r.choice(forms)


def _url(r: random.Random) -> str:
    d = r.choice(DOMAINS)
    path = "".join(r.choice(string.ascii_lowercase) for _ in range(r.randint(3, 8)))
    return r.choice([f"https://{d}/{path}", f"http://www.{d}", f"www.{d}/{path}.html", f"https://{d}/{path}?id={r.randint(1, 999)}",
                     f"https://www.{d}/gallery/{path}/", f"http://{d}:8080/{path}"])


def luhn_complete(prefix: str, length: int, r: random.Random) -> str:
    """A card number of ``length`` digits starting with ``prefix`` whose Luhn check passes."""
    body = prefix + "".join(str(r.randint(0, 9)) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return body + str((10 - total % 10) % 10)


def _card(r: random.Random) -> str:
    prefix, length = r.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15), ("6011", 16)])
    num = luhn_complete(prefix, length, r)
    if length == 15:
        groups = [num[:4], num[4:10], num[10:]]
    else:
        groups = [num[i:i + 4] for i in range(0, 16, 4)]
    return r.choice([" ".join(groups), "-".join(groups), num])


def _ip(r: random.Random) -> str:
    if r.random() < 0.6:
        return ".".join(str(r.randint(1, 254)) for _ in range(4))
    groups = [f"{r.randint(0, 0xFFFF):x}" for _ in range(8)]
    return r.choice([":".join(groups), f"2001:db8::{groups[0]}:{groups[1]}", f"fe80::{groups[2]}:{groups[3]}"])


IBAN_LAYOUT = {"DE": 18, "GB": 18, "FR": 23, "ES": 20, "NL": 14, "IT": 23, "CH": 17}


def iban(country: str, bban: str) -> str:
    """The IBAN of ``bban`` in ``country`` with its ISO 13616 mod-97 check digits."""
    digits = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(digits) % 97:02d}{bban}"


def _iban(r: random.Random) -> str:
    country = r.choice(list(IBAN_LAYOUT))
    n = IBAN_LAYOUT[country]
    if country == "GB":
        bban = "".join(r.choice(string.ascii_uppercase) for _ in range(4)) + "".join(
            str(r.randint(0, 9)) for _ in range(14))
    elif country == "NL":
        bban = "".join(r.choice(string.ascii_uppercase) for _ in range(4)) + "".join(
            str(r.randint(0, 9)) for _ in range(10))
    elif country == "IT":
        bban = r.choice(string.ascii_uppercase) + "".join(str(r.randint(0, 9)) for _ in range(22))
    else:
        bban = "".join(str(r.randint(0, 9)) for _ in range(n))
    code = iban(country, bban)
    return r.choice([code, " ".join(code[i:i + 4] for i in range(0, len(code), 4))])


MAKERS = {"EMAIL_ADDRESS": _email, "PHONE_NUMBER": _phone, "URL": _url, "CREDIT_CARD": _card, "IP_ADDRESS": _ip,
          "IBAN_CODE": _iban}


def make_captions(n: int, seed: int = 0) -> list[dict]:
    """``n`` captions: ``{"text", "entities": [{"entity", "start", "end"}]}``; a third hold no entity."""
    r = random.Random(seed)
    out = []
    for i in range(n):
        text, spans = r.choice(SUBJECTS), []
        if r.random() < 0.5:
            text += ", " + r.choice(DISTRACTORS)
        for _ in range((1 + (r.random() < 0.25)) if i % 3 else 0):
            kind = r.choice(list(MAKERS))
            value = MAKERS[kind](r)
            if r.random() < 0.25:
                pre, post = r.choice(BEFORE if kind != "IP_ADDRESS" else [b for b in BEFORE if b[1] != ": "])
                shift = len(pre) + len(value) + len(post)
                spans = [{**s, "start": s["start"] + shift, "end": s["end"] + shift} for s in spans]
                spans.append({"entity": kind, "start": len(pre), "end": len(pre) + len(value)})
                text = pre + value + post + text
            else:
                pre, post = r.choice(AFTER)
                spans.append({"entity": kind, "start": len(text) + len(pre), "end": len(text) + len(pre) + len(value)})
                text = text + pre + value + post
        out.append({"text": text, "entities": sorted(spans, key=lambda s: s["start"])})
    return out


def score(captions: list[dict], found: list[list[dict]], min_iou: float = 0.8) -> dict[str, dict]:
    """Recall and precision per entity type: a finding matches a planted entity of its type when
    their spans' intersection over union is at least ``min_iou``."""
    stats: dict[str, dict] = {k: {"planted": 0, "found": 0, "matched": 0, "hits": 0} for k in MAKERS}
    for cap, finds in zip(captions, found):
        for s in cap["entities"]:
            stats[s["entity"]]["planted"] += 1
        used = set()
        for f in finds:
            st = stats.setdefault(f["entity"], {"planted": 0, "found": 0, "matched": 0, "hits": 0})
            st["found"] += 1
            for j, s in enumerate(cap["entities"]):
                inter = min(f["end"], s["end"]) - max(f["start"], s["start"])
                union = max(f["end"], s["end"]) - min(f["start"], s["start"])
                if s["entity"] == f["entity"] and inter > 0 and inter / union >= min_iou:
                    st["matched"] += 1
                    if j not in used:
                        used.add(j)
                        st["hits"] += 1
                    break
    for st in stats.values():
        st["recall"] = st["hits"] / st["planted"] if st["planted"] else None
        st["precision"] = st["matched"] / st["found"] if st["found"] else None
    return stats
