"""What the `pupils` verb does: replace the pupil register from the school's CSV.

Takes a `Context` and the file's bytes; produces the changes per school, as lines for the
administrator, or raises `Refused` (the register unchanged) when rows are refused or the file
would remove more than half of the register. The register is replaced in one transaction with
its receipt; each pupil is sealed in the vault and found by keyed digests.
"""

from __future__ import annotations

from collections import Counter

from gateway.admin.common import Refused
from gateway.admin.imports import change_lines, parse_pupils_csv, refused_lines, school_changes
from gateway.core.records import PupilRow
from gateway.observe.operator import current_operator
from gateway.pipeline.context import Context
from gateway.store.api import Tx


async def pupils_import(ctx: Context, data: bytes, force: bool,
                        accept_refused: bool = False) -> str:
    """Replace the register. Refused rows refuse the whole import unless `accept_refused`, and
    so does one that removes more than half of the register unless `force`: a nightly job must
    never drop a child quietly (issue 12). Either way the answer names each refused row by its
    line and the pupils each school gained or lost."""
    try:
        parsed = parse_pupils_csv(data)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    rows = []
    for pupil in parsed.pupils:
        record = {"name": pupil.name, "birthdate": pupil.birthdate.isoformat(), "bsn": pupil.bsn}
        rows.append(PupilRow(ctx.vault.digest("register-bsn", pupil.bsn) if pupil.bsn else None,
                             ctx.vault.digest("register-birthdate", pupil.birthdate.isoformat()),
                             pupil.school, ctx.vault.seal(record, f"pupil:{pupil.school}")))
    after = dict(Counter(p.school for p in parsed.pupils))
    refused = len(parsed.refused)
    now = ctx.clock()

    async def replace(tx: Tx) -> tuple[dict[str, int], int, int]:
        before_counts = await tx.register.counts()
        before = sum(before_counts.values())
        why = []
        if refused and not accept_refused:
            why.append(f"{refused} of {refused + len(parsed.pupils)} rows refused (correct "
                       "the file, or leave these rows out with --accept-refused)")
        if before and len(parsed.pupils) < before / 2 and not force:
            why.append(f"the file has {len(parsed.pupils)} usable rows, the register {before}: "
                       "this would remove more than half of it (use --force if intended)")
        if why:
            raise Refused("\n".join([
                "pupils import refused, the register is unchanged: " + "; ".join(why),
                *refused_lines(parsed.refused),
                "per school (vestigingscode), had the import gone ahead"
                + (" without the refused rows:" if refused else ":"),
                *change_lines(before_counts, after)]))
        changes = school_changes(before_counts, after)
        total = await tx.register.replace(rows)
        await tx.receipts.append("register.imported", at=now, rows=total, schools=len(after),
                                 refused=refused, previous=before,
                                 gained=sum(max(c.after - c.before, 0) for c in changes),
                                 lost=sum(max(c.before - c.after, 0) for c in changes),
                                 operator=current_operator())
        return before_counts, before, total

    before_counts, before, total = await ctx.store.write(replace)
    unknown = sorted(set(after) - set((await ctx.refresh()).schools))
    lines = [f"register replaced: {total} pupils at {len(after)} schools (was {before} pupils "
             f"at {len(before_counts)} schools), {refused} rows refused"
             + (" and left out (--accept-refused)" if refused else "")]
    lines += refused_lines(parsed.refused)
    if unknown:
        lines.append(f"  note: {len(unknown)} school codes are not in the directory yet "
                     f"(e.g. {', '.join(unknown[:5])})")
    lines += ["per school (vestigingscode), compared with the register it replaced:",
              *change_lines(before_counts, after)]
    return "\n".join(lines)
