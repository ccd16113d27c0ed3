"""Every stored canary policy names the sources it trusts (decision 0017).

Analyses stored before had no ``sources`` and counted every call: they get the default, which is
exactly that (the registry's runs, and reports and feedback from any key), written down so the
stored policy says what the analysis counts. The values are spelled out here, not imported: a
migration must not change when the code's default does.
"""

from django.db import migrations

SOURCES_BEFORE = {"runs": True, "reports": True, "keys": None}


def fill_in_sources(apps, schema_editor):
    CanaryAnalysis = apps.get_model("evaluations", "CanaryAnalysis")
    for analysis in CanaryAnalysis.objects.only("policy").iterator():
        if "sources" not in analysis.policy:
            analysis.policy = {**analysis.policy, "sources": dict(SOURCES_BEFORE)}
            analysis.save(update_fields=["policy"])


class Migration(migrations.Migration):
    dependencies = [
        ("evaluations", "0005_discarded_drafts_take_their_eval_runs"),
    ]

    operations = [
        migrations.RunPython(fill_in_sources, migrations.RunPython.noop),
    ]
