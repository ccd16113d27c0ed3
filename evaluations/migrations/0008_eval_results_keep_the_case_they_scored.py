"""Eval results keep the case they scored (variables and expectation), so that editing a case
never rewrites what an earlier run's report shows (docs/decisions/0021).

Results stored before this migration get their case's current values: the best that is known
(for a result since the case's last change, exactly what it was scored on). One UPDATE with a
subquery, whatever the number of results.
"""

from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def copy_current_cases(apps, schema_editor):
    EvalResult = apps.get_model("evaluations", "EvalResult")
    Case = apps.get_model("evaluations", "Case")
    case = Case.objects.filter(pk=OuterRef("case_id"))
    EvalResult.objects.filter(case__isnull=False).update(
        variables=Subquery(case.values("variables")[:1]),
        expectation=Subquery(case.values("expectation")[:1]),
    )


class Migration(migrations.Migration):
    dependencies = [
        ("evaluations", "0007_identifiers_match_whole"),
    ]

    operations = [
        migrations.AddField(
            model_name="evalresult",
            name="expectation",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="evalresult",
            name="variables",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.RunPython(copy_current_cases, migrations.RunPython.noop),
    ]
