from rest_framework import serializers

from langrun.models import ApiKey, User


class StrictCharField(serializers.CharField):
    """A CharField that takes only strings: DRF's would turn a JSON number into text."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class ApiKeySerializer(serializers.ModelSerializer):
    """A key as listed: never the secret, only its first characters."""

    api_key = serializers.CharField(source="masked", read_only=True, help_text="The key's prefix, the rest masked.")

    class Meta:
        model = ApiKey
        fields = ["id", "name", "api_key", "is_active", "created_at", "last_used_at", "use_count"]
        read_only_fields = fields


class ApiKeyCreateSerializer(serializers.Serializer):
    name = StrictCharField(max_length=100, allow_blank=True, default="")


class ApiKeyCreatedSerializer(ApiKeySerializer):
    """A key just created: `api_key` is the full secret, shown this once."""

    api_key = serializers.CharField(read_only=True, help_text="The full key. It is shown only now; store it.")


class UserSerializer(serializers.ModelSerializer):
    email = serializers.CharField(read_only=True, help_text="Empty when not set.")

    class Meta:
        model = User
        fields = [
            "id",
            "username",
            "email",
            "first_name",
            "last_name",
            "is_active",
            "is_staff",
            "is_superuser",
            "date_joined",
            "last_login",
        ]
        read_only_fields = fields
