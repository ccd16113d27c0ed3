"""Eval results keep the guardrail checks that fired on their case (issue 19, decision 0052):
what a ``guardrails`` scorer judges. Results stored before have none: an empty list, the default.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("evaluations", "0009_prompt_authors_remove_cases"),
    ]

    operations = [
        migrations.AddField(
            model_name="evalresult",
            name="guardrails",
            field=models.JSONField(
                blank=True, default=list, help_text="The guardrail checks that fired on this case."
            ),
        ),
    ]
